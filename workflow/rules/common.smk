import sys

from snakemake.utils import validate

from chunkflow.errors import ChunkflowError
from chunkflow.workflow_support import prepare

try:
    RUN = prepare(config)
except ChunkflowError as err:
    sys.stderr.write(f"chunkflow: error: {err}\n")
    sys.exit(1)

# prepare() has checked `config` against this schema with one-line errors; this fills in its
# defaults (and validates again, which cannot fail now).
validate(config, "../schemas/config.schema.yaml")

