"""publish: an index folder that passed the gate -> `<target>/<version>/` + `CURRENT` pointer.

To s3://bucket/prefix: `<prefix>/<version>/...` first, then `<prefix>/LATEST`.
Invariant: readers follow `CURRENT` / `LATEST`, written last and atomically, so they see the
previous index or the new one, never a half-copied folder. Nothing is published when the gate
failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.core.catalog import RECEIPT
from tasks.core.config import PublishConfig
from tasks.core.progress import task_logger
from tasks.core.runtime import main, stage_task, start_stage
from tasks.evaluation.metrics import check_gate
from tasks.storage import s3
from tasks.storage.published import publish_folder, publish_to_s3, version_name


def publish_index(index_dir: Path, cfg: PublishConfig, root: Path, version: str,
                  pointer: dict[str, Any]) -> tuple[str, str]:
    """Copy the index folder to the target (folder or s3://); (target, published location)."""
    if s3.is_s3(cfg.target):
        client = s3.make_client(s3.S3Settings(cfg.s3_endpoint_url, cfg.s3_region))
        return cfg.target, publish_to_s3(index_dir, cfg.target, version, pointer, client)
    target = (root / cfg.target).resolve()
    return str(target), str(publish_folder(index_dir, target, version, pointer, cfg.keep))


@stage_task("publish")
def publish_task(root: str = ".") -> str:
    """Publish the evaluated index when its gate passed."""
    run = start_stage("publish", root)
    cfg = run.params.publish
    check_gate(run.inputs["evaluate"], "publish", "the published index is")
    version = version_name(run.inputs["index"])
    model = run.inputs["index"]["model"]  # the model queries must use: base or tuned
    pointer = {"index_fingerprint": run.inputs["index"]["fingerprint"],
               "evaluate_fingerprint": run.inputs["evaluate"]["fingerprint"],
               "model": model["name"], "model_fingerprint": model["fingerprint"]}
    target, final = publish_index(run.input_dirs["index"], cfg, run.root, version, pointer)
    fp = run.fingerprint()
    with run.output(fp, cfg) as out:
        out.write_json(RECEIPT, {"target": target, "version": version,
                                 "model": model["name"]})
        out.record(published=final, rows={})
    task_logger().info("publish: %s -> %s in %.1f s", run.input_dirs["index"], final,
                       run.seconds)
    return str(run.out_dir)


if __name__ == "__main__":
    main(publish_task)
