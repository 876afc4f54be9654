import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { EncodeJob, InvalidJob, hls, mp4 } from "../src/index.js";
import { ROOT } from "./helpers.js";

// The schema's property names, to check the builder writes no other.
const schema = JSON.parse(readFileSync(join(ROOT, "docs", "encode-job.schema.json"), "utf8"));

test("built jobs use the schema's names", () => {
  const spec = new EncodeJob({
    input: "s3://media/src/a.mov",
    output: hls("s3://media/vod/a", 4),
    renditions: [
      { codec: "h264", height: 1080, bitrateKbps: 5000, preset: "slow" },
      { codec: "hevc", height: 720, quality: 28, keyframeIntervalS: 2, name: "mid" },
    ],
    audio: { mode: "copy" },
    hardware: "nvenc",
    allowTruncated: true,
    timeoutS: 7200,
  }).toSpec();
  assert.equal(spec.timeout_s, 7200);
  for (const k of Object.keys(spec)) assert.ok(k in schema.properties, k);
  const rendition = schema.$defs.Rendition.properties;
  for (const r of spec.renditions as Record<string, unknown>[]) for (const k of Object.keys(r)) assert.ok(k in rendition, k);
  assert.deepEqual(spec.container, { format: "hls", segment_s: 4 });
  assert.deepEqual(new EncodeJob({ input: "a", output: mp4("b") }).toSpec().audio, { mode: "aac", bitrate_kbps: 128 });
  const chunked = new EncodeJob({ input: "film.mov", output: mp4("films/film"), chunkS: 60 }).toSpec();
  assert.deepEqual(chunked.chunking, { target_s: 60 });
  assert.ok("chunking" in schema.properties);
  assert.equal(new EncodeJob({ input: "a", output: mp4("b") }).toSpec().chunking, undefined);
});

test("impossible jobs name their field", () => {
  const cases: [ConstructorParameters<typeof EncodeJob>[0], string][] = [
    [{ input: "", output: mp4("a") }, "input"],
    [{ input: "a", output: mp4("a"), timeoutS: 1.5 }, "timeoutS"],
    [{ input: "a", output: mp4("a"), chunkS: 1 }, "chunking.target_s"],
    [{ input: "https://x/a", output: mp4("a"), chunkS: 60 }, "chunking"],
    [{ input: "a", output: mp4("a"), renditions: [] }, "renditions"],
    [{ input: "a", output: mp4("a"), renditions: [{ height: 721 }] }, "renditions[0].height"],
    [{ input: "a", output: mp4("a"), renditions: [{ height: 720 }, {}] }, "renditions[1].height"],
    [{ input: "a", output: mp4("a"), renditions: [{ bitrateKbps: 900, quality: 20 }] }, "renditions[0].quality"],
    [{ input: "a", output: mp4("a"), renditions: [{ height: 720 }, { height: 720 }] }, "renditions[1].name"],
    [{ input: "a", output: hls("a", 0.5) }, "container.segment_s"],
    [{ input: "s3://media/../etc", output: mp4("a") }, "input"],
    [{ input: "a", output: mp4("s3://Media/x") }, "output"],
  ];
  for (const [init, field] of cases) {
    assert.throws(() => new EncodeJob(init).toSpec(), (e: unknown) => e instanceof InvalidJob && e.field === field, field);
  }
});
