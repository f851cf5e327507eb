import sys

from snakemake.utils import validate

from chunkflow.errors import ChunkflowError
from chunkflow.grid import BLOCK_ID_PATTERN
from chunkflow.workflow_support import prepare

try:
    RUN = prepare(config)
except ChunkflowError as err:
    sys.stderr.write(f"chunkflow: error: {err}\n")
    sys.exit(1)

# Same schema as prepare() checked, with its defaults filled into `config`.
validate(config, "../schemas/config.schema.yaml")


wildcard_constraints:
    block=BLOCK_ID_PATTERN,
