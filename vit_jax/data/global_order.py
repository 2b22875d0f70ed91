"""The global train stream of a random-access split, and each process's share of it.

Global position g = 0, 1, 2, ... is row g % B of global batch g // B (B rows per global
batch). It holds record index_shuffle(g % N, epoch seed of g // N) of the N-record split and
is augmented with a seed derived from g. A process reads fixed rows of every global batch
(those its devices hold), so its local position k is global position
(k // L) * B + rows[k % L], L = len(rows).

Hence: the global batches do not depend on the number of processes that read them (one
process with 4 devices and 2 processes with 2 devices each train on the same batches); in each
epoch the processes read disjoint records that together are the whole split; and any
position is reached without reading what comes before it (resuming costs nothing).
"""

import numpy as np

from vit_jax.data import errors


class Share:
  """The rows of every global batch that one process reads."""

  def __init__(self, rows, global_batch: int, num_examples: int):
    self.rows = np.asarray(rows, np.int64)
    self.local_batch = len(self.rows)
    self.global_batch = global_batch
    self.num_examples = num_examples
    # Local positions per "epoch" of this process (its share of the split), between which
    # the stream checks that something was readable.
    self.epoch_share = max(1, -(-num_examples * self.local_batch // global_batch))

  def global_position(self, k):
    """Local position(s) k -> global position(s); k: a Python or NumPy int."""
    return (k // self.local_batch) * self.global_batch + self.rows[k % self.local_batch]

  def global_position_tf(self, k):
    """The same for an int64 tensor (inside tf.data functions)."""
    from vit_jax.data import tf_setup

    tf = tf_setup.tf()
    rows = tf.constant(self.rows, tf.int64)
    return (k // self.local_batch) * self.global_batch + tf.gather(rows, k % self.local_batch)


def process_rows(
  global_batch: int, process_index: int, process_count: int, sharding=None
) -> np.ndarray:
  """Global batch rows that this process supplies, in the order of its local rows.

  Without a sharding the processes hold consecutive blocks; with one, the rows of the
  process's addressable devices (where `jax.make_array_from_process_local_data` puts them).
  """
  local = global_batch // process_count
  if sharding is None:
    return np.arange(process_index * local, (process_index + 1) * local)
  starts = {}
  for index in sharding.addressable_devices_indices_map((global_batch,)).values():
    piece = index[0]
    start = piece.start or 0
    stop = global_batch if piece.stop is None else piece.stop
    starts[start] = stop
  rows = np.concatenate([np.arange(a, starts[a]) for a in sorted(starts)])
  if len(rows) != local:
    raise errors.DataError(
      f'This process holds {len(rows)} rows of each global batch of {global_batch}, not '
      f'{local}; shard the batch so that every process holds an equal part.'
    )
  return rows
