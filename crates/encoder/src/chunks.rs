//! Chunked encodes (docs/encode-jobs.md, "Chunked encodes"): a spec with
//! `chunking` is planned from the input's keyframe index into chunks, each
//! encoded by a job of its own, and a join that stream-copies them into the
//! outputs with the audio encoded once.
//!
//! [`Encoder::plan_chunks`](crate::Encoder::plan_chunks) reads the index;
//! [`pick_starts`] chooses the boundaries (pure, so its rules are tested
//! without media); [`ChunkPlan::jobs`] writes the chunk and join specs a
//! worker enqueues as a flow.

use spool_encode_spec::{Audio, Container, EncodeSpec, MAX_CHUNKS, Part};

/// Where a chunked encode's boundaries are, and what they were chosen from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChunkPlan {
    /// The input video stream's time base, `[num, den]`.
    pub time_base: [i32; 2],
    /// Each chunk's first timestamp (a keyframe), counted from the video's
    /// start; the first is 0.
    pub starts: Vec<i64>,
    /// Past the video's last frame, in the same units.
    pub end: i64,
    /// Keyframes the input has.
    pub keyframes: usize,
    /// How far the video starts after the outputs' origin (the earlier of
    /// the input's video and audio starts), in `time_base`.
    pub video_offset: i64,
    /// Whether the input has an audio stream.
    pub has_audio: bool,
}

/// The jobs of a chunked encode, as [`ChunkPlan::jobs`] writes them.
#[derive(Debug, Clone)]
pub struct ChunkJobs {
    /// One per chunk, in order.
    pub chunks: Vec<EncodeSpec>,
    /// The audio, encoded once (AAC from an input with audio); it runs
    /// beside the chunks, so the join only copies.
    pub audio: Option<EncodeSpec>,
    /// The join, the flow's parent.
    pub join: EncodeSpec,
}

impl ChunkPlan {
    /// The video's length, seconds.
    pub fn duration_s(&self) -> f64 {
        self.end as f64 * f64::from(self.time_base[0]) / f64::from(self.time_base[1].max(1))
    }

    /// The specs of the chunk jobs, in order, of the audio job, and of the
    /// join, for `spec` (which asks for chunking) with the chunk files under
    /// the output name `dir` (relative to the output root, or `s3://`).
    pub fn jobs(&self, spec: &EncodeSpec, dir: &str) -> ChunkJobs {
        let count = self.starts.len() as u32;
        let chunks = self
            .starts
            .iter()
            .enumerate()
            .map(|(i, start)| {
                let mut c = spec.clone();
                c.chunking = None;
                c.output = chunk_name(dir, i as u32);
                c.audio = Audio::None;
                c.container = Container::Mp4;
                c.part = Some(Part::Chunk {
                    index: i as u32,
                    count,
                    start: *start,
                    end: self.starts.get(i + 1).copied(),
                    time_base: self.time_base,
                });
                c
            })
            .collect();
        let audio = (self.has_audio && matches!(spec.audio, Audio::Aac { .. })).then(|| {
            let mut a = spec.clone();
            a.chunking = None;
            a.output = format!("{}/audio", dir.trim_end_matches('/'));
            a.container = Container::Mp4;
            a.renditions.truncate(1);
            a.part = Some(Part::Audio);
            a
        });
        let mut join = spec.clone();
        join.chunking = None;
        join.part = Some(Part::Join {
            dir: dir.to_owned(),
            starts: self.starts.clone(),
            time_base: self.time_base,
            audio: audio.is_some(),
            video_offset: self.video_offset,
        });
        ChunkJobs {
            chunks,
            audio,
            join,
        }
    }
}

/// The output name of chunk `i` under `dir`.
pub fn chunk_name(dir: &str, i: u32) -> String {
    format!("{}/c{i:05}", dir.trim_end_matches('/'))
}

/// The output directory (relative to the output root) a chunked encode of
/// `output` keeps its chunks in: beside the output, named after `key` (the
/// planning job's id and enqueue time), so a retried plan finds the same.
pub fn chunk_dir(output: &str, key: &str) -> String {
    // FNV-1a: stable across builds and machines, unlike `DefaultHasher`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let name = format!("spool-chunks-{h:016x}");
    match output.trim_end_matches('/').rsplit_once('/') {
        Some((parent, _)) => format!("{parent}/{name}"),
        None => name,
    }
}

/// Chooses chunk starts among `keyframes` (increasing, in units of `tb`
/// seconds each, the video ending at `end`): the keyframe nearest each
/// multiple of `target_s` (rounded to a multiple of `segment_s` for HLS,
/// so chunk seams fall on segment boundaries), never a chunk shorter than
/// half the target at the end, at most [`MAX_CHUNKS`]. The first start is
/// 0. One start means the input is not worth splitting.
pub fn pick_starts(
    keyframes: &[i64],
    tb: f64,
    end: i64,
    target_s: f64,
    segment_s: Option<f64>,
) -> Vec<i64> {
    let mut starts = vec![0i64];
    if tb <= 0.0 || keyframes.is_empty() {
        return starts;
    }
    let step = match segment_s {
        Some(s) if s > 0.0 => (target_s / s).round().max(1.0) * s,
        _ => target_s,
    };
    let end_s = end as f64 * tb;
    let mut k = 1u32;
    let mut i = 0usize;
    loop {
        let want = f64::from(k) * step;
        if want >= end_s || starts.len() as u32 >= MAX_CHUNKS {
            break;
        }
        // The keyframe nearest `want` after the last start.
        while i + 1 < keyframes.len() && keyframes[i + 1] as f64 * tb <= want {
            i += 1;
        }
        let below = keyframes[i];
        let pick = match keyframes.get(i + 1) {
            Some(&above) if (above as f64 * tb - want) < (want - below as f64 * tb) => above,
            _ => below,
        };
        let last = starts.last().copied().unwrap_or(0);
        if pick > last && (pick as f64 - last as f64) * tb >= step / 2.0 {
            starts.push(pick);
        }
        k += 1;
    }
    // A short tail joins the chunk before it.
    while starts.len() > 1 {
        let last = starts.last().copied().unwrap_or(0);
        if (end - last) as f64 * tb < step / 2.0 {
            starts.pop();
        } else {
            break;
        }
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keyframes every `every` s for `len` s, at 1/1000 s units.
    fn every(every: f64, len: f64) -> (Vec<i64>, i64) {
        let n = (len / every).ceil() as i64;
        (
            (0..n).map(|i| (i as f64 * every * 1000.0) as i64).collect(),
            (len * 1000.0) as i64,
        )
    }

    #[test]
    fn starts_fall_on_keyframes_near_each_target() {
        let (kf, end) = every(2.0, 150.0);
        let s = pick_starts(&kf, 0.001, end, 15.0, None);
        // 2 s keyframes: 15 s is equidistant from 14 and 16; the earlier wins.
        assert_eq!(
            s,
            vec![
                0, 14_000, 30_000, 44_000, 60_000, 74_000, 90_000, 104_000, 120_000, 134_000
            ]
        );
        assert!(s.iter().all(|t| kf.contains(t)));
    }

    #[test]
    fn hls_seams_fall_on_segment_multiples() {
        let (kf, end) = every(2.0, 150.0);
        let s = pick_starts(&kf, 0.001, end, 15.0, Some(4.0));
        // 15 s rounds to 16 s: four 4 s segments a chunk.
        assert_eq!(s[1..4], [16_000, 32_000, 48_000]);
        assert!(s.iter().all(|t| t % 4000 == 0));
    }

    #[test]
    fn a_short_tail_joins_the_chunk_before() {
        let (kf, end) = every(1.0, 64.0);
        let s = pick_starts(&kf, 0.001, end, 20.0, None);
        // 60..64 would be a 4 s chunk: merged, the last runs 40..64.
        assert_eq!(s, vec![0, 20_000, 40_000]);
    }

    #[test]
    fn sparse_keyframes_give_fewer_longer_chunks() {
        // Keyframes only at 0 and 50 s of 120 s.
        let s = pick_starts(&[0, 50_000], 0.001, 120_000, 10.0, None);
        assert_eq!(s, vec![0, 50_000]);
        // No keyframe but the first: one chunk, nothing to split.
        assert_eq!(pick_starts(&[0], 0.001, 120_000, 10.0, None), vec![0]);
    }

    #[test]
    fn chunk_dirs_are_stable_and_beside_the_output() {
        assert_eq!(chunk_dir("films/a", "job-1"), chunk_dir("films/a", "job-1"));
        assert!(chunk_dir("films/a", "job-1").starts_with("films/spool-chunks-"));
        assert!(chunk_dir("a", "job-1").starts_with("spool-chunks-"));
        assert_ne!(chunk_dir("a", "job-1"), chunk_dir("a", "job-2"));
        assert_eq!(chunk_name("d/", 7), "d/c00007");
    }
}
