"""Recipe configs (one file per recipe); `python main.py --help` lists them."""
