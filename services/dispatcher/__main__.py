"""python -m services.dispatcher"""

from services.dispatcher.app import main
from shared.lifecycle import run

run(main)
