from libs.common.db import run_alembic_env
from services.packet.tables import metadata

run_alembic_env(metadata)
