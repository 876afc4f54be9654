//! The display matrix: how to turn a phone's portrait video upright, as
//! FFmpeg's CLI does (`-autorotate`).

use ff::{codec, format};
use ffmpeg_next as ff;
/// How the input's display matrix says to turn its frames, as FFmpeg's CLI
/// reads it (`-autorotate`, on by default there and here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rotation {
    None,
    Clock,
    UpsideDown,
    CounterClock,
}

impl Rotation {
    pub(super) fn of(stream: &format::stream::Stream) -> Rotation {
        let Some(sd) = stream
            .side_data()
            .find(|sd| sd.kind() == codec::packet::side_data::Type::DisplayMatrix)
        else {
            return Rotation::None;
        };
        let m: Vec<f64> = sd
            .data()
            .chunks_exact(4)
            .take(9)
            .map(|b| f64::from(i32::from_ne_bytes([b[0], b[1], b[2], b[3]])) / 65536.0)
            .collect();
        if m.len() < 5 {
            return Rotation::None;
        }
        // av_display_rotation_get(), then the CLI's normalisation to [0, 360).
        let (s0, s1) = (m[0].hypot(m[3]), m[1].hypot(m[4]));
        if s0 == 0.0 || s1 == 0.0 {
            return Rotation::None;
        }
        let get = -(m[1] / s1).atan2(m[0] / s0).to_degrees();
        let mut theta = -get.round();
        theta -= 360.0 * (theta / 360.0 + 0.9 / 360.0).floor();
        match theta {
            t if (t - 90.0).abs() < 1.0 => Rotation::Clock,
            t if (t - 180.0).abs() < 1.0 => Rotation::UpsideDown,
            t if (t - 270.0).abs() < 1.0 => Rotation::CounterClock,
            _ => Rotation::None,
        }
    }

    pub(super) fn filters(self) -> &'static str {
        match self {
            Rotation::None => "",
            Rotation::Clock => "transpose=clock,",
            Rotation::UpsideDown => "hflip,vflip,",
            Rotation::CounterClock => "transpose=cclock,",
        }
    }
}
