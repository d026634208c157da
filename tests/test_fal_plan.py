"""Intake planning: which files of a scanned fal result become which ledger rows, and what
the delivery's note says about the rest."""

from __future__ import annotations

from jobs.fal.payload import AppLink
from jobs.fal.plan import MAX_FILES, plan_files
from jobs.fal.walker import find_media

V3 = "https://v3.fal.media/files"


def test_the_app_link_takes_the_rows_file_and_keeps_a_text_id() -> None:
    scan = find_media({"video": {"url": V3 + "/v.mp4"}, "thumbnail": V3 + "/t.png"})
    link = AppLink("gen_videos", "3f2b6c1e-8d4a-4f1b-9c2e-7a5d0e6b1f23", "upscale")
    plan = plan_files(scan, request_id="r1", link=link, fal_app=None)
    assert [(f.kind, f.source_table, f.source_id, f.variant) for f in plan.files] == [
        ("upscale", "gen_videos", link.source_id, "upscale"),
        ("image", None, None, None),
    ]
    assert plan.note() is None


def test_files_past_the_cap_are_counted_in_the_note() -> None:
    scan = find_media({"images": [V3 + f"/{i}.png" for i in range(MAX_FILES + 234)]})
    plan = plan_files(scan, request_id="r1", link=None, fal_app=None)
    assert len(plan.files) == MAX_FILES
    assert plan.note() == f"{MAX_FILES + 234} files referenced; only the first {MAX_FILES} were kept"


def test_problems_past_fifty_are_counted_not_listed() -> None:
    scan = find_media({"bad": [{"url": f"s3://b/{i}.mp4"} for i in range(70)]})
    note = plan_files(scan, request_id="r1", link=None, fal_app=None).note()
    assert note is not None and len(note) <= 2000
    assert note.startswith("70 URLs cannot be copied; the first 50 follow; payload.bad[0]: unsupported")


def test_a_cut_walk_is_noted() -> None:
    scan = find_media({"a": [[{"url": V3 + "/deep.png"}]]}, max_depth=2)
    note = plan_files(scan, request_id="r1", link=None, fal_app=None).note()
    assert note == "nested too deep to walk completely; some files may be missing"
