import sys

from chunkflow.config import validate as validate_config
from chunkflow.errors import ChunkflowError
from chunkflow.grid import BLOCK_ID_PATTERN
from chunkflow.workflow_support import prepare

try:
    RUN = prepare(config)
except ChunkflowError as err:
    sys.stderr.write(f"chunkflow: error: {err}\n")
    sys.exit(1)

# prepare() checked `config` against ../schemas/config.schema.yaml (chunkflow's own, draft-07
# validator); fill in its defaults here. snakemake.utils.validate would validate it again with a
# draft 2020-12 validator and warn about the schema version on every run.
config.update(validate_config(config))


wildcard_constraints:
    block=BLOCK_ID_PATTERN,
