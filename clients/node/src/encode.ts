/**
 * Typed builders for the encode job spec (docs/encode-jobs.md), checked with
 * the worker's rules so a bad job is refused before it reaches Redis. Field
 * names and values are those of docs/encode-job.schema.json.
 */

import { InvalidJob } from "./errors.js";

export type Codec = "h264" | "hevc" | "av1";
export type Preset = "fastest" | "fast" | "medium" | "slow" | "slowest";
export type Hardware = "auto" | "nvenc" | "cpu";

/** One output rendition. */
export interface Rendition {
  codec?: Codec;
  height?: number;
  width?: number;
  bitrateKbps?: number;
  quality?: number;
  preset?: Preset;
  keyframeIntervalS?: number;
  name?: string;
}

/** MP4 output (`<stem>_<rendition>.mp4` each in a ladder). */
export interface Mp4 {
  format: "mp4";
  path: string;
}

/** HLS output: a directory (or key prefix) with a master playlist. */
export interface Hls {
  format: "hls";
  path: string;
  segmentS?: number;
}

export const mp4 = (path: string): Mp4 => ({ format: "mp4", path });
export const hls = (path: string, segmentS = 6): Hls => ({ format: "hls", path, segmentS });

export type Audio = { mode: "aac"; bitrateKbps?: number } | { mode: "copy" } | { mode: "none" };

/** An encode job; pass it to `enqueue` as the payload. */
export interface EncodeJobInit {
  input: string;
  output: Mp4 | Hls;
  renditions?: Rendition[];
  audio?: Audio;
  hardware?: Hardware;
  allowTruncated?: boolean;
  /** The encode's own time limit in seconds (the worker's SPOOL_MAX_JOB_TIMEOUT caps it). */
  timeoutS?: number;
  /**
   * Split into chunks of about this many seconds at the input's keyframes,
   * encoded in parallel by the queue's workers and joined
   * (docs/encode-jobs.md, "Chunked encodes"); not for http(s) inputs.
   */
  chunkS?: number;
}

const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

export class EncodeJob {
  constructor(readonly init: EncodeJobInit) {}

  /** The spec as JSON-ready data, after checking it. */
  toSpec(): Record<string, unknown> {
    this.validate();
    const j = this.init;
    const renditions = (j.renditions ?? [{}]).map((r) => {
      const d: Record<string, unknown> = { codec: r.codec ?? "h264", preset: r.preset ?? "medium" };
      if (r.name !== undefined) d.name = r.name;
      if (r.width !== undefined) d.width = r.width;
      if (r.height !== undefined) d.height = r.height;
      if (r.bitrateKbps !== undefined) d.bitrate_kbps = r.bitrateKbps;
      if (r.quality !== undefined) d.quality = r.quality;
      if (r.keyframeIntervalS !== undefined) d.keyframe_interval_s = r.keyframeIntervalS;
      return d;
    });
    const a = j.audio ?? { mode: "aac" };
    const audio = a.mode === "aac" ? { mode: "aac", bitrate_kbps: a.bitrateKbps ?? 128 } : { mode: a.mode };
    const container =
      j.output.format === "hls" ? { format: "hls", segment_s: j.output.segmentS ?? 6 } : { format: "mp4" };
    return {
      input: j.input,
      output: j.output.path,
      renditions,
      audio,
      container,
      hardware: j.hardware ?? "auto",
      allow_truncated: j.allowTruncated ?? false,
      ...(j.timeoutS !== undefined ? { timeout_s: j.timeoutS } : {}),
      ...(j.chunkS !== undefined ? { chunking: { target_s: j.chunkS } } : {}),
    };
  }

  toJSON(): Record<string, unknown> {
    return this.toSpec();
  }

  /** Throws `InvalidJob` naming the first impossible field. */
  validate(): void {
    const j = this.init;
    if (j.timeoutS !== undefined && !(Number.isInteger(j.timeoutS) && j.timeoutS >= 1 && j.timeoutS <= 31 * 86_400))
      throw new InvalidJob("timeoutS", `${String(j.timeoutS)} must be whole seconds within 1..=2678400`);
    if (j.chunkS !== undefined) {
      if (typeof j.chunkS !== "number" || !(j.chunkS >= 2 && j.chunkS <= 3600))
        throw new InvalidJob("chunking.target_s", `${String(j.chunkS)} must be within 2..=3600 seconds`);
      if (typeof j.input === "string" && /^https?:\/\//i.test(j.input))
        throw new InvalidJob("chunking", "needs an input every worker can read (a path or s3://), not http(s)");
    }
    for (const [name, v] of [
      ["input", j.input],
      ["output", j.output?.path],
    ] as const) {
      if (typeof v !== "string" || v.trim() === "") throw new InvalidJob(name, "is empty");
      if (v.slice(0, 5).toLowerCase() === "s3://") checkS3(name, v);
    }
    const rs = j.renditions ?? [{}];
    if (rs.length < 1 || rs.length > 8) throw new InvalidJob("renditions", "must hold 1 to 8 renditions");
    const seen = new Set<string>();
    rs.forEach((r, i) => {
      const f = `renditions[${i}]`;
      const codec = r.codec ?? "h264";
      if (!["h264", "hevc", "av1"].includes(codec)) throw new InvalidJob(`${f}.codec`, `${codec} is not h264, hevc or av1`);
      if (codec === "av1" && j.output.format === "hls")
        throw new InvalidJob(`${f}.codec`, "av1 cannot go in HLS (its segments are MPEG-TS): use h264 or hevc, or mp4");
      if (r.width === undefined && r.height === undefined && rs.length > 1)
        throw new InvalidJob(`${f}.height`, "is required in a ladder");
      for (const [dim, v, hi] of [
        ["width", r.width, 7680],
        ["height", r.height, 4320],
      ] as const) {
        if (v !== undefined && (!Number.isInteger(v) || v < 16 || v > hi || v % 2 !== 0))
          throw new InvalidJob(`${f}.${dim}`, `${v} must be even and within 16..=${hi}`);
      }
      if (r.bitrateKbps !== undefined && r.quality !== undefined)
        throw new InvalidJob(`${f}.quality`, "give bitrateKbps or quality, not both");
      if (r.bitrateKbps !== undefined && !(r.bitrateKbps >= 50 && r.bitrateKbps <= 200_000))
        throw new InvalidJob(`${f}.bitrate_kbps`, `${r.bitrateKbps} is outside 50..=200000`);
      const qmax = codec === "av1" ? 63 : 51;
      if (r.quality !== undefined && !(r.quality >= 0 && r.quality <= qmax))
        throw new InvalidJob(`${f}.quality`, `${r.quality} is outside 0..=${qmax}`);
      const k = r.keyframeIntervalS;
      if (k !== undefined && !(k >= 0.1 && k <= 60))
        throw new InvalidJob(`${f}.keyframe_interval_s`, "must be within 0.1..=60");
      const label = r.name ?? (r.height !== undefined ? `${r.height}p` : r.width !== undefined ? `${r.width}w` : "source");
      if (!NAME.test(label)) throw new InvalidJob(`${f}.name`, "must be 1 to 64 letters, digits, - or _");
      if (seen.has(label)) throw new InvalidJob(`${f}.name`, `'${label}' is used twice`);
      seen.add(label);
    });
    const a = j.audio;
    if (a?.mode === "aac" && a.bitrateKbps !== undefined && !(a.bitrateKbps >= 16 && a.bitrateKbps <= 512))
      throw new InvalidJob("audio.bitrate_kbps", `${a.bitrateKbps} is outside 16..=512`);
    if (j.output.format === "hls") {
      const s = j.output.segmentS ?? 6;
      if (!(s >= 1 && s <= 60)) throw new InvalidJob("container.segment_s", "must be within 1..=60");
    }
  }
}

/** The key rules of crates/encode-spec/src/s3.rs. */
function checkS3(name: string, uri: string): void {
  const rest = uri.slice(5);
  const slash = rest.indexOf("/");
  const bucket = slash < 0 ? rest : rest.slice(0, slash);
  const key = slash < 0 ? "" : rest.slice(slash + 1);
  if (key === "") throw new InvalidJob(name, "names a bucket but no key: write s3://bucket/key");
  if (!BUCKET.test(bucket) || bucket.includes("..")) throw new InvalidJob(name, `has bucket name '${bucket}'`);
  if (Buffer.byteLength(key) > 1024) throw new InvalidJob(name, "has a key over 1024 bytes");
  if (/[\x00-\x1f\x7f\\]/.test(key)) throw new InvalidJob(name, "has a key with a control character or a backslash");
  for (const seg of key.split("/"))
    if (seg === "" || seg === "." || seg === "..")
      throw new InvalidJob(name, `has key '${key}' with an empty, '.' or '..' segment`);
}
