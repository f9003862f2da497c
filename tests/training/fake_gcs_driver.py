"""pretrain_driver.py with gs:// served from a local folder (tests/fake_gcs.py); not collected.

python tests/training/fake_gcs_driver.py FAKE_GCS_ROOT gs://BUCKET/WORKDIR [driver options]
"""

import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import fake_gcs  # noqa: E402

if __name__ == "__main__":
    fake_gcs.install(sys.argv[1])
    sys.argv = [os.path.join(HERE, "pretrain_driver.py")] + sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")
