"""plan_gc on indexes built in memory: multi-platform images, pins on a platform, the bound."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ligoenv.oci.digest import Digest
from ligoenv.store.index import DigestRecord, RepositoryIndex
from ligoenv.store.pins import Pin, PinSet
from ligoenv_server.gcpolicy import GcPolicy, plan_gc

NOW = datetime(2026, 6, 1, tzinfo=UTC)
OLD = NOW - timedelta(days=90)
INDEX, AMD, ARM, OTHER = (Digest("sha256", c * 64) for c in "1234")
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def tree(digest: Digest) -> str:
    return f".images/{digest.hex[:2]}/{digest.hex}"


def repository(name: str = "lab/app") -> RepositoryIndex:
    index = RepositoryIndex.empty("registry.example.org", name)
    index.record_image(DigestRecord(INDEX, OCI_INDEX, {"linux/amd64": AMD, "linux/arm64": ARM},
                                    published=OLD))
    for digest, platform in ((AMD, "linux/amd64"), (ARM, "linux/arm64")):
        index.record_image(DigestRecord(digest, OCI_MANIFEST, {platform: digest}, platform=platform,
                                        path=tree(digest), published=OLD))
    index.record_image(DigestRecord(OTHER, OCI_MANIFEST, {"linux/amd64": OTHER}, platform="linux/amd64",
                                    path=tree(OTHER), published=OLD))
    index.move_tag("nightly", INDEX, OLD, "test")
    index.move_tag("nightly", OTHER, OLD + timedelta(days=1), "test")
    return index


def test_platform_images_share_their_index_fate() -> None:
    plan = plan_gc([repository()], PinSet(), GcPolicy(keep_last=1), NOW)
    assert sorted(plan.trees) == sorted([tree(AMD), tree(ARM)])
    assert plan.marks() == {("registry.example.org", "lab/app"): [INDEX, AMD, ARM]}
    kept = {v.digest: v.reason for v in plan.verdicts if not v.collect}
    assert kept == {OTHER: "tagged now as :nightly"}


def test_keep_last_keeps_the_previous_build_with_its_platforms() -> None:
    plan = plan_gc([repository()], PinSet(), GcPolicy(keep_last=2), NOW)
    assert plan.trees == []
    reasons = {v.digest: v.reason for v in plan.verdicts}
    assert reasons[ARM] == f"platform image of {INDEX.short}: one of the last 2 digests of :nightly"


def test_a_pin_on_one_platform_keeps_the_whole_image() -> None:
    pins = PinSet()
    pins.add(ARM, Pin("paper", "alice", OLD, "GWTC-4", "x"))
    plan = plan_gc([repository()], pins, GcPolicy(keep_last=1), NOW)
    assert plan.trees == []


def test_shared_tree_kept_by_another_repository_and_the_bound() -> None:
    other = repository("lab/copy")
    other.move_tag("stable", AMD, OLD, "test")  # lab/copy tags the amd64 image itself now
    plan = plan_gc([repository(), other], PinSet(), GcPolicy(keep_last=1, max_trees=1), NOW)
    assert plan.trees == [tree(ARM)] and plan.deferred == []
    amd = next(v for v in plan.verdicts if v.digest == AMD and v.repository == "lab/app")
    assert not amd.collect and amd.reason.startswith("its tree is shared with registry.example.org/lab/copy")
    bounded = plan_gc([repository()], PinSet(), GcPolicy(keep_last=1, max_trees=1), NOW)
    assert len(bounded.trees) == 1 and len(bounded.deferred) == 1
