from libs.common.db import run_alembic_env
from services.automation.tables import metadata

run_alembic_env(metadata)
