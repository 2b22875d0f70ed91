"""Training: a config in, a trained run out.

config.py          the fields every config has, presets, loading config files
config_check.py    every field validated, one line per mistake, before anything is written
setup_run.py       config -> mesh, data, model, optimizer, abstract state (nothing compiled)
loop.py            the steps, evaluation, checkpoints, preemption (loop.train_and_evaluate)
step.py            the train and eval steps; state.py the TrainState; optim.py the optimizer
session.py         a run stepped from Python
metrics.py         stdout, metrics.jsonl and TensorBoard (tensorboard_events.py)
throughput.py      honest step time, MFU, profiler traces
"""
