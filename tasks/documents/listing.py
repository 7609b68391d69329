"""`ingest.source` as DVC sees it: ingest's own listing of the folder or prefix.

DVC depends on `<paths.data>/source-listing.jsonl`, never on the source itself: its hashing
stops a run on a symlink loop or a name that is not UTF-8 and would read what links point to
outside the folder. The listing (`sources.source_listing`) opens no file. `embedpipe run`,
`stage` and `status` write it before asking DVC; `python -m tasks.documents.listing` is the
DVC stage `source` that writes it under `dvc repro`, when it is missing or this code changed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from tasks.core.catalog import SOURCE_LISTING
from tasks.core.config import Params, load_params
from tasks.core.io import write_text_if_changed
from tasks.documents.sources import source_listing


def listing_text(params: Params, root: Path) -> str:
    """The listing file's text: the source, then one JSON line per entry, sorted."""
    rows = [{"source": params.ingest.source}, *source_listing(params.ingest, root)]
    return "".join(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n" for row in rows)


def write_source_listing(root: Path, params: Params) -> bool:
    """Write the listing under `paths.data` of the workspace `root`, replacing the file in
    one rename and only when its content changes; whether it changed."""
    return write_text_if_changed(Path(root) / params.paths.data / SOURCE_LISTING,
                                 listing_text(params, root))


def main() -> None:
    """The DVC stage `source`: write the listing of the workspace `$DVC_ROOT`."""
    root = Path(os.environ.get("DVC_ROOT", ".")).resolve()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        write_source_listing(root, load_params(root / "params.yaml"))
    except (ValueError, RuntimeError) as err:
        logging.getLogger("embedpipe").error("%s", err)
        sys.exit(2)


if __name__ == "__main__":
    main()
