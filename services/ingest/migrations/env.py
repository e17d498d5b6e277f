from libs.common.db import run_alembic_env
from services.ingest.tables import metadata

run_alembic_env(metadata)
