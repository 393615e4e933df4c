"""python -m services.ingest"""

from services.ingest.app import main
from shared.lifecycle import run

run(main)
