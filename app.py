"""GPT Workbench, the Gradio app: `python app.py` serves http://127.0.0.1:7860.

    python app.py                      # local only
    python app.py --port 8000          # another port (or GRADIO_SERVER_PORT=8000)
    python app.py --host 0.0.0.0       # reachable from other machines (or GRADIO_SERVER_NAME)
    python app.py --share              # a temporary public gradio.live link
    python app.py --api                # also the OpenAI-compatible API at /v1 (docs/api.md)

Also the app_file of a Hugging Face Space. Training is only offered on a server that other
people cannot reach, unless WORKBENCH_ALLOW_TRAINING=1 (see docs/gradio.md).
"""

import sys

from app.gradio.server import main

if __name__ == "__main__":
    sys.exit(main())
