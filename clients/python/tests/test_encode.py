"""The encode builders: what they build is valid against the spec's JSON
Schema, and what the worker would refuse is refused here first."""

from __future__ import annotations

import json

import jsonschema
import pytest
from conftest import ROOT

from spool_client import Audio, EncodeJob, Hls, InvalidJob, Mp4, Rendition

SCHEMA = json.loads((ROOT / "docs" / "encode-job.schema.json").read_text())


def test_built_jobs_match_the_schema() -> None:
    jobs = [
        EncodeJob(input="a.mov", output=Mp4("a.mp4")),
        EncodeJob(
            input="s3://media/src/a.mov",
            output=Hls("s3://media/vod/a", segment_s=4),
            renditions=[
                Rendition(codec="h264", height=1080, bitrate_kbps=5000, preset="slow"),
                Rendition(codec="hevc", height=720, quality=28, keyframe_interval_s=2),
                Rendition(codec="hevc", height=360, name="low-hevc"),
            ],
            audio=Audio("copy"),
            hardware="nvenc",
            allow_truncated=True,
            timeout_s=7200,
        ),
        EncodeJob(input="a.mov", output=Mp4("b"), audio=Audio("aac", 96)),
        EncodeJob(input="film.mov", output=Mp4("films/film"), chunk_s=60),
    ]
    for job in jobs:
        jsonschema.validate(job.to_dict(), SCHEMA)
    assert json.loads(jobs[1].to_json())["container"] == {"format": "hls", "segment_s": 4}
    assert jobs[3].to_dict()["chunking"] == {"target_s": 60}
    assert "chunking" not in jobs[0].to_dict()


@pytest.mark.parametrize(
    ("job", "field"),
    [
        (EncodeJob(input="", output=Mp4("a")), "input"),
        (EncodeJob(input="a", output=Mp4("a"), timeout_s=0), "timeout_s"),
        (EncodeJob(input="a", output=Mp4("a"), chunk_s=1), "chunking.target_s"),
        (EncodeJob(input="https://x/a", output=Mp4("a"), chunk_s=60), "chunking"),
        (EncodeJob(input="a", output=Mp4("a"), renditions=[]), "renditions"),
        (
            EncodeJob(input="a", output=Mp4("a"), renditions=[Rendition(height=721)]),
            "renditions[0].height",
        ),
        (
            EncodeJob(input="a", output=Mp4("a"), renditions=[Rendition(height=720), Rendition()]),
            "renditions[1].height",
        ),
        (
            EncodeJob(
                input="a",
                output=Mp4("a"),
                renditions=[Rendition(height=720, bitrate_kbps=900, quality=20)],
            ),
            "renditions[0].quality",
        ),
        (
            EncodeJob(input="a", output=Mp4("a"), renditions=[Rendition(codec="av1", quality=64)]),
            "renditions[0].quality",
        ),
        (
            EncodeJob(input="a", output=Hls("a"), renditions=[Rendition(codec="av1", height=360)]),
            "renditions[0].codec",
        ),
        (
            EncodeJob(
                input="a",
                output=Mp4("a"),
                renditions=[Rendition(height=720), Rendition(height=720)],
            ),
            "renditions[1].name",
        ),
        (EncodeJob(input="a", output=Hls("a", segment_s=0.5)), "container.segment_s"),
        (EncodeJob(input="a", output=Mp4("a"), audio=Audio("aac", 8)), "audio.bitrate_kbps"),
        (EncodeJob(input="s3://media/../etc", output=Mp4("a")), "input"),
        (EncodeJob(input="a", output=Mp4("s3://Media/x")), "output"),
        (EncodeJob(input="a", output=Mp4("s3://media//x")), "output"),
    ],
)
def test_impossible_jobs_name_their_field(job: EncodeJob, field: str) -> None:
    with pytest.raises(InvalidJob) as e:
        job.to_dict()
    assert e.value.field == field
