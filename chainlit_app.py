"""GPT Workbench as a chat product: `chainlit run chainlit_app.py` (add --headless to not open a
browser, --host/--port to choose where it listens).

The app is app/chainlit/: importing its handlers module here registers the event handlers
(Chainlit's decorators run on import). Settings come from the environment (WORKBENCH_DEVICE,
WORKBENCH_CHECKPOINTS, WORKBENCH_RUNS, WORKBENCH_DATA; see app/chainlit/handlers.py);
.chainlit/config.toml and public/ are read from the folder `chainlit run` starts in (this one).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # chainlit imports this file by path; app/ and engine/ live beside it
    sys.path.insert(0, str(ROOT))

from app.chainlit import handlers  # noqa: E402,F401  (registers the handlers)
