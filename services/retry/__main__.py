"""python -m services.retry"""

from services.retry.app import main
from shared.lifecycle import run

run(main)
