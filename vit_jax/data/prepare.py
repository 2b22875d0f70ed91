r"""Downloads and prepares a TFDS dataset, so that training finds it offline.

  python -m vit_jax.data.prepare cifar10 --data_dir=DIR
  python -m vit_jax.data.prepare imagenet2012 --data_dir=DIR --manual_dir=DIR_WITH_TARS

The same as `tfds build NAME`, without the CLI's apache_beam requirement: TFDS's
`builder(NAME).download_and_prepare()`, with failures reported in one line (exit code 2).
Offline, that line comes within seconds (a probe of the download host), with where the files
can come from instead, rather than after TFDS's minutes of retries.
"""

import sys

from absl import app
from absl import flags

from vit_jax.data import errors

_DATA_DIR = flags.DEFINE_string('data_dir', None, "TFDS data_dir (default: TFDS's own).")
_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, 'Manually downloaded files.')


def main(argv):
  if len(argv) != 2:
    print(
      'Error: pass one TFDS dataset name, e.g. `python -m vit_jax.data.prepare cifar10 '
      '--data_dir=DIR`.',
      file=sys.stderr,
    )
    sys.exit(2)
  from vit_jax.data import tfds_source

  try:
    source = tfds_source.TfdsSource(
      argv[1], data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value, download=True
    )
  except errors.DataError as e:
    print(f'Error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'Prepared {source.name} in {source.data_dir}: {source.split_sizes}')


if __name__ == '__main__':
  app.run(main)
