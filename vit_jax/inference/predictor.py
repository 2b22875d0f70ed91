"""A checkpoint made ready to classify image files: model, params, class names, preprocessing.

    predictor = predictor.load('WORKDIR')                       # a training run
    predictor = predictor.load('i21k+i1k:ViT-B_16')             # a released name
    predictor = predictor.load('ViT-B_16.npz', model_name='ViT-B_16', labels_file='names.txt')
    results = predictor.predict(['cat.jpg', 'dog.png'], top_k=5)

Takes everything vit_jax.weights.sources reads. A run's workdir gives the model (config.json),
the class names and the eval preprocessing (labels.json, see vit_jax.run.workdir); a released
name gives the model. Any other file or folder (released or big_vision `.npz`, timm, Hugging
Face) needs the model's name. The image size comes from the position embeddings, whether the
model has a `pre_logits` layer and which position embedding from the file too
(vit_jax.weights.spec), the class names from a label file or the ImageNet lists.
Every mismatch is a one-line PredictError, raised before anything is compiled. Used by the
command lines `python -m vit_jax.predict` and `analyze`.
"""

import dataclasses
import difflib
import os
from typing import Any, Optional, Sequence

from etils import epath
import flax
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import models
from vit_jax.inference import labels as labels_lib
from vit_jax.models import layers
from vit_jax.models import layouts
from vit_jax.run import workdir as workdir_lib
from vit_jax.system import cpu_devices
from vit_jax.system import quiet_logs
from vit_jax.weights import catalogue
from vit_jax.weights import sources
from vit_jax.weights import spec
from vit_jax.weights import tree

_FILE_RESIZE_MODE = 'resize'  # the original vit_jax evaluated the released models so.
_KINDS = {
  'state_dict': 'timm or Hugging Face weights file',
  'hf': 'Hugging Face folder',
  'timm': 'timm folder',
}


class PredictError(ValueError):
  """Bad input; the message says what is wrong and what to pass instead (one line)."""


@dataclasses.dataclass
class Predictor:
  """A model with its params, class names and eval preprocessing; batches are split over the
  local devices (one per CPU core when `load` ran before JAX started)."""

  model: Any
  params: Any
  class_names: list[str]
  image_size: int
  resize_mode: str
  resize_small: Optional[int]
  about: dict[str, Any]  # checkpoint, step, model, labels: where everything came from.
  workdir: Optional[str] = None  # the run's folder, for a run's checkpoint.
  _forward: Any = dataclasses.field(default=None, init=False, repr=False)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def decode(self, paths: Sequence[str]) -> list[tuple[Optional[np.ndarray], Optional[str]]]:
    """Per path: (uint8 [size, size, 3], None) for a readable image, else (None, the reason);
    decoded and resized as the run's evaluation did (vit_jax.data.image_files)."""
    from vit_jax.data import image_files  # TensorFlow, imported when images are decoded.

    return image_files.decode(
      paths, crop=self.image_size, resize_mode=self.resize_mode, resize_small=self.resize_small
    )

  def probabilities(self, images: np.ndarray) -> np.ndarray:
    """float32 [B, num_classes] softmax of the logits for uint8 images [B, size, size, 3]."""
    if self._forward is None:
      self._forward = jax.jit(
        lambda params, x: jax.nn.softmax(
          self.model.apply({'params': params}, layers.model_input(x), train=False).astype(
            jnp.float32
          )
        )
      )
    # Split over the devices (one per core on a CPU host): pad to a multiple of their count.
    rows, pad = len(images), -len(images) % jax.local_device_count()
    if pad:
      images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    return np.asarray(self._forward(self.params, cpu_devices.shard_batch(images)))[:rows]

  def predict(
    self, paths: Sequence[str], *, top_k: int = 5, batch: int = 32
  ) -> list[dict[str, Any]]:
    """One result per path, in order: {'image', 'top_k': [{'class', 'name', 'probability'}]}
    (best first), or {'image', 'error'} for a file that could not be read."""
    top_k = min(top_k, self.num_classes)
    size = min(batch, len(paths))  # every batch padded to this: one compilation.
    results = []
    for start in range(0, len(paths), size):
      chunk = paths[start : start + size]
      decoded = self.decode(chunk)
      readable = [i for i, (image, _) in enumerate(decoded) if image is not None]
      images = np.zeros((size, self.image_size, self.image_size, 3), np.uint8)
      for row, i in enumerate(readable):
        images[row] = decoded[i][0]
      probs = dict(zip(readable, self.probabilities(images))) if readable else {}
      for i, (path, (_, error)) in enumerate(zip(chunk, decoded)):
        if error is not None:
          results.append({'image': path, 'error': error})
          continue
        best = np.argsort(-probs[i], kind='stable')[:top_k]
        results.append(
          {
            'image': path,
            'top_k': [
              {'class': int(c), 'name': self.class_names[c], 'probability': float(probs[i][c])}
              for c in best
            ],
          }
        )
    return results


def _abstract_params(model, image_size: int):
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
  return flax.linen.meta.unbox(variables['params'])


def _fit(flat, model, image_size: int, where: str, hint: str = '') -> dict[str, Any]:
  """Flat host params checked against the model's (every key and shape, no resampling: the
  model must be the checkpoint's), cast to its dtypes and laid out as its params."""
  try:
    abstract = tree.flatten(_abstract_params(model, image_size))
  except ValueError as e:  # e.g. an image size the patch stride does not divide.
    raise PredictError(f'{where}: {e}') from None
  layout = layouts.layout_of(tree.unflatten(abstract))
  abstract = tree.flatten_released(tree.unflatten(abstract))
  diffs = [
    f'{k} {tuple(flat[k].shape)} vs model {tuple(abstract[k].shape)}'
    for k in sorted(flat.keys() & abstract.keys())
    if flat[k].shape != abstract[k].shape
  ]
  diffs += [f'{k} only in the checkpoint' for k in sorted(flat.keys() - abstract.keys())]
  diffs += [f'{k} only in the model' for k in sorted(abstract.keys() - flat.keys())]
  if diffs:
    more = f' and {len(diffs) - 3} more' if len(diffs) > 3 else ''
    raise PredictError(
      f'{where} does not match the checkpoint: {"; ".join(diffs[:3])}{more}{hint}.'
    )
  params = tree.unflatten({k: np.asarray(v, dtype=abstract[k].dtype) for k, v in flat.items()})
  return layouts.convert(params, layout) if layout else params


def _model(name: str, num_classes: int, **overrides):
  try:
    return models.get_model(name, num_classes=num_classes, **overrides)
  except ValueError as e:
    raise PredictError(f'--model={name}: {e}') from None


def _check_model_name(name: str) -> None:
  names = models.model_names()
  if name not in names:
    close = difflib.get_close_matches(name, names, n=3)
    hint = f'did you mean {", ".join(close)}? ' if close else ''
    raise PredictError(
      f'unknown --model={name}; {hint}list the models with `python -c "from '
      'vit_jax import models; print(models.model_names())"`.'
    )


def _num_classes(flat: dict[str, Any], where: str) -> int:
  if not spec.num_classes(flat):
    raise PredictError(f'{where} has no head/kernel: it holds no classifier to predict with.')
  return spec.num_classes(flat)


def _from_run(
  source: sources.Source, model_name, labels_file, image_size, resize_mode
) -> Predictor:
  """A run's checkpoint: the model from its config.json, names and preprocessing from its
  labels.json (its config's crop and resize for runs that predate labels.json)."""
  where = f'checkpoint step {source.step}'
  try:
    config = workdir_lib.read_config(source.workdir)
    recorded = workdir_lib.read_labels(source.workdir)
  except workdir_lib.RunFileError as e:
    raise PredictError(str(e)) from None
  if config is None:
    raise PredictError(
      f'--checkpoint={source.path}: no config.json in {source.workdir} to '
      "build the model from; pass the run's workdir, or a .npz with --model."
    )
  if model_name and model_name != config['model_name']:
    raise PredictError(
      f'--model={model_name} but the run in {source.workdir} trained '
      f'{config["model_name"]}; drop --model for a workdir.'
    )
  num_classes = _num_classes(source.params, where)
  if recorded and recorded['num_classes'] != num_classes:
    raise PredictError(
      f'{source.workdir}/{workdir_lib.LABELS} has {recorded["num_classes"]} '
      f"classes but the checkpoint's head has {num_classes}; delete "
      f'{workdir_lib.LABELS} or pass --labels=FILE.'
    )
  pp = (
    recorded['eval_preprocess']
    if recorded
    else {
      'crop': config['pp']['crop'],
      'resize_mode': config['pp']['resize_mode'],
      'resize_small': None,
    }
  )
  name, overrides = workdir_lib.model_of(config)
  model = _model(name, num_classes, dtype=jnp.dtype(config['dtype']), **overrides)
  size = image_size or pp['crop']
  params = _fit(
    source.params,
    model,
    size,
    f'{config["model_name"]} of {source.workdir}/{workdir_lib.CONFIG} at {size}px',
  )
  names, labels_source = _class_names(num_classes, labels_file, recorded)
  return Predictor(
    model=model,
    params=jax.device_put(params),
    class_names=names,
    image_size=size,
    resize_mode=resize_mode or pp['resize_mode'],
    resize_small=pp['resize_small'] if size == pp['crop'] else None,
    about={
      'checkpoint': source.path,
      'step': source.step,
      'model': models.describe(name, overrides),  # not the bare name of a model it changes.
      'labels': labels_source,
    },
    workdir=str(source.workdir),
  )


def _from_file(
  given: str, source: sources.Source, model_name, labels_file, image_size, resize_mode
) -> Predictor:
  """Any other checkpoint: the registered model named (or held by a released name), given the
  file's head, pre-logits layer and position embedding; the image size from the file."""
  flat = source.params
  num_classes = _num_classes(flat, given)
  model = _model(model_name, num_classes)
  model = model.clone(**source.model_fields(model))  # the file's head, GELU form, ...
  if not image_size:
    image_size = spec.square_image_size(flat, model.stride)
    if not image_size:
      raise PredictError(
        f'cannot tell the image size of {given} for {model_name}; pass '
        '--image_size (e.g. 224 or 384).'
      )
  params = _fit(
    flat,
    model,
    image_size,
    f'--model={model_name} at {image_size}px',
    '; pass the --model (and --image_size) that the file was saved from',
  )
  names, labels_source = _class_names(num_classes, labels_file, None)
  return Predictor(
    model=model,
    params=jax.device_put(params),
    class_names=names,
    image_size=image_size,
    resize_mode=resize_mode or _FILE_RESIZE_MODE,
    resize_small=None,
    about={'checkpoint': given, 'step': None, 'model': model_name, 'labels': labels_source},
  )


def load(
  checkpoint_path: str,
  *,
  model_name: Optional[str] = None,
  labels_file: Optional[str] = None,
  image_size: Optional[int] = None,
  resize_mode: Optional[str] = None,
) -> Predictor:
  """A Predictor for anything vit_jax.weights.sources reads: a run's workdir (or checkpoints
  or step folder; its newest intact checkpoint), a released name, a released or big_vision
  `.npz`, a timm or Hugging Face file or folder (these with `model_name`).

  Raises:
    PredictError: (one line) a missing or unreadable checkpoint, a model that does not match
      it, a label file that does not fit.
  """
  if not checkpoint_path:
    raise PredictError(
      'pass --checkpoint=WORKDIR (a training run) or --checkpoint=FILE.npz with --model.'
    )
  if resize_mode is not None:
    from vit_jax.data import preprocess  # no TF import

    if resize_mode not in preprocess.RESIZE_MODES:
      raise PredictError(f'--resize_mode={resize_mode}; use one of {preprocess.RESIZE_MODES}.')
  checkpoint_path = os.path.expanduser(checkpoint_path)  # the shell leaves `--flag=~/x` as is.
  # Before anything starts JAX: one device per core, XLA:CPU flags for the run's dtype.
  cpu_devices.prepare(dtypes=[_recorded_dtype(checkpoint_path)])
  try:
    kind = sources.identify(checkpoint_path)
  except ValueError as e:  # a catalogue prefix with a name it does not have.
    raise PredictError(f'--checkpoint={checkpoint_path}: {e}') from None
  if kind != 'released' and not epath.Path(checkpoint_path).exists():
    raise PredictError(
      f"--checkpoint={checkpoint_path} does not exist; pass a run's workdir or a .npz file."
    )
  model_name = model_name or (catalogue.model_name(checkpoint_path) if kind == 'released' else None)
  if model_name:
    _check_model_name(model_name)
  elif kind not in ('run', None):  # None: sources.read says what the path is not.
    what = 'a .npz' if kind == 'npz' else f'a {_KINDS[kind]}'
    raise PredictError(
      f'--checkpoint={checkpoint_path} is {what}: pass the model it holds with '
      '--model (e.g. --model=ViT-B_16).'
    )
  heads = getattr(models.get_model(model_name), 'num_heads', None) if model_name else None
  try:
    source = sources.read(checkpoint_path, num_heads=heads)
  except (ValueError, OSError) as e:
    raise PredictError(f'--checkpoint={checkpoint_path}: {quiet_logs.first_line(e)}') from None
  if source.workdir is not None:
    return _from_run(source, model_name, labels_file, image_size, resize_mode)
  return _from_file(checkpoint_path, source, model_name, labels_file, image_size, resize_mode)


def _recorded_dtype(checkpoint_path: str) -> str:
  """The compute dtype a run's config.json records, for a run's folder (its workdir, checkpoints
  folder or a step's folder); float32 for anything else (files hold params, not a dtype)."""
  folder = epath.Path(checkpoint_path)
  for candidate in (folder, folder.parent, folder.parent.parent):
    try:
      config = workdir_lib.read_config(candidate) if candidate.is_dir() else None
    except (workdir_lib.RunFileError, OSError, ValueError):
      config = None
    if config and config.get('dtype') in ('float32', 'bfloat16'):
      return config['dtype']
  return 'float32'


def _class_names(num_classes: int, labels_file: Optional[str], recorded: Optional[dict]):
  try:
    return labels_lib.class_names(num_classes, labels_file, recorded)
  except labels_lib.LabelsError as e:
    raise PredictError(str(e)) from None
