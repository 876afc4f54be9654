//! Runs one encode from a spec file, outside any queue:
//! `cargo run --release -p spool-encoder --example encode -- INPUT_ROOT OUTPUT_ROOT SPEC.json`.
//! Prints progress to stderr and the result as JSON on stdout.

use spool_encoder::{CancellationToken, EncodeSpec, Encoder, EncoderConfig, Limits};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input_root, output_root, spec_path] = args.as_slice() else {
        eprintln!("usage: encode INPUT_ROOT OUTPUT_ROOT SPEC.json");
        std::process::exit(2);
    };
    let spec = EncodeSpec::from_json(&std::fs::read(spec_path)?, &Limits::default())?;
    let encoder = Encoder::new(EncoderConfig::new(input_root, output_root))?;
    let result = encoder.encode_blocking(
        &spec,
        &mut |p| eprintln!("{:5.1}% {} frames {:.1} fps", p.percent, p.frames, p.fps),
        &CancellationToken::new(),
    )?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
