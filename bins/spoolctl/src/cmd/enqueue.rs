//! `spoolctl enqueue`: one payload, a file, NDJSON on stdin, or a flow
//! document (each checked whole before anything is sent).

use crate::*;

#[derive(clap::Args)]
pub(crate) struct EnqueueArgs {
    /// One JSON payload.
    #[arg(long, conflicts_with_all = ["file", "source", "flow"])]
    pub(crate) payload: Option<String>,
    /// A flow: a JSON document (a file, or `-` for stdin) of a parent and
    /// its children, `{"queue", "payload", "options", "on_child_failure",
    /// "children": [...]}`, enqueued whole or not at all; prints the
    /// parent's id, then every child's in document order
    /// (docs/operations.md, "Flows").
    #[arg(long, value_name = "FILE", conflicts_with_all = ["file", "source", "priority", "delay", "max_attempts", "dedup_key", "timeout", "timeout_retry", "id_prefix"])]
    pub(crate) flow: Option<String>,
    /// A file holding one JSON payload.
    #[arg(long, conflicts_with = "source")]
    pub(crate) file: Option<std::path::PathBuf>,
    /// `-`: NDJSON on stdin, one job a line, sent in batches.
    #[arg(value_name = "-")]
    pub(crate) source: Option<String>,
    /// Priority, -1000..=1000 (higher first).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub(crate) priority: i32,
    /// Delay before the job may run (`30s`, `5m`, or seconds).
    #[arg(long)]
    pub(crate) delay: Option<String>,
    /// Attempts allowed, counting the first.
    #[arg(long)]
    pub(crate) max_attempts: Option<u32>,
    /// While a job with this key is live, enqueueing returns its id instead.
    #[arg(long)]
    pub(crate) dedup_key: Option<String>,
    /// The job's time limit (`2h`, `90s`): past it the worker cancels the
    /// handling and fails the job "timed out after …".
    #[arg(long)]
    pub(crate) timeout: Option<String>,
    /// Retry a timed-out attempt (true) or not (false); unset: the worker's
    /// `SPOOL_JOB_TIMEOUT_RETRY`.
    #[arg(long)]
    pub(crate) timeout_retry: Option<bool>,
    /// With `-`: the job read from line N gets the id `PREFIX-N`, so sending
    /// the same input again with the same prefix enqueues only what is
    /// missing (an enqueue of an existing id returns it). Without it, a
    /// random prefix is drawn and printed when a send fails part-way.
    #[arg(long, value_name = "PREFIX")]
    pub(crate) id_prefix: Option<String>,
}

pub(crate) fn options(args: &EnqueueArgs) -> Result<JobOptions, Failure> {
    let mut o = JobOptions::default().priority(args.priority);
    if let Some(d) = &args.delay {
        o = o.delay(parse_delay(d)?);
    }
    if let Some(n) = args.max_attempts {
        o = o.max_attempts(n);
    }
    if let Some(k) = &args.dedup_key {
        o = o.dedup_key(k.clone());
    }
    if let Some(t) = &args.timeout {
        o = o.timeout(spool_queue::parse_duration(t).ok_or_else(|| {
            usage(format!(
                "invalid --timeout {t:?}: use 2h, 30m, 90s or seconds"
            ))
        })?);
    }
    o.timeout_retry = args.timeout_retry;
    o.validate()?;
    Ok(o)
}

/// A random 64-bit number from the OS (the default id prefix).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

pub(crate) fn parse_delay(v: &str) -> Result<Duration, Failure> {
    spool_queue::parse_duration(v).ok_or_else(|| {
        usage(format!(
            "invalid --delay {v:?}: use 30s, 500ms, 5m or seconds"
        ))
    })
}

pub(crate) fn check_json(text: &str, what: &str) -> Result<Vec<u8>, Failure> {
    serde_json::from_str::<serde_json::Value>(text)
        .map_err(|e| usage(format!("{what} is not valid JSON: {e}")))?;
    Ok(text.trim().as_bytes().to_vec())
}

/// One node of a `--flow` document.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowDoc {
    #[serde(default)]
    queue: Option<String>,
    payload: serde_json::Value,
    #[serde(default)]
    options: FlowOptions,
    #[serde(default)]
    on_child_failure: spool_queue::ChildFailure,
    #[serde(default)]
    children: Vec<FlowDoc>,
}

/// A flow node's job options; durations as `30s`, `5m` or seconds.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FlowOptions {
    id: Option<String>,
    priority: Option<i32>,
    delay: Option<String>,
    max_attempts: Option<u32>,
    lease: Option<String>,
    retention: Option<String>,
    dedup_key: Option<String>,
    timeout: Option<String>,
    timeout_retry: Option<bool>,
}

/// A flow document's node as a [`spool_queue::Flow`], checked; `at` says
/// where it is for the messages (`children[2].children[0]`).
fn flow_of(doc: FlowDoc, queue: &str, at: &str) -> Result<spool_queue::Flow, Failure> {
    // A node in another queue than its parent's (its children follow it
    // unless they say otherwise).
    let own_queue = doc.queue.clone().filter(|q| q != queue);
    if let Some(q) = &own_queue {
        spool_queue::Keys::new(q).map_err(|e| usage(format!("{at}: {e}")))?;
    }
    let dur = |v: &Option<String>, name: &str| -> Result<Option<Duration>, Failure> {
        v.as_deref()
            .map(|t| {
                spool_queue::parse_duration(t).ok_or_else(|| {
                    usage(format!(
                        "{at}: invalid options.{name} {t:?}: use 30s, 5m, 2h or seconds"
                    ))
                })
            })
            .transpose()
    };
    let o = &doc.options;
    let mut opts = JobOptions::default();
    if let Some(id) = &o.id {
        opts = opts.id(id.clone());
    }
    if let Some(p) = o.priority {
        opts = opts.priority(p);
    }
    if let Some(d) = dur(&o.delay, "delay")? {
        opts = opts.delay(d);
    }
    if let Some(n) = o.max_attempts {
        opts = opts.max_attempts(n);
    }
    if let Some(d) = dur(&o.lease, "lease")? {
        opts = opts.lease(d);
    }
    if let Some(d) = dur(&o.retention, "retention")? {
        opts = opts.retention(d);
    }
    if let Some(k) = &o.dedup_key {
        opts = opts.dedup_key(k.clone());
    }
    if let Some(d) = dur(&o.timeout, "timeout")? {
        opts = opts.timeout(d);
    }
    opts.timeout_retry = o.timeout_retry;
    opts.validate().map_err(|e| usage(format!("{at}: {e}")))?;
    let payload = doc.payload.to_string().into_bytes();
    let mut flow = spool_queue::Flow::new(NewJob::with_options(payload, opts))
        .on_child_failure(doc.on_child_failure);
    let here = own_queue.as_deref().unwrap_or(queue);
    for (i, c) in doc.children.into_iter().enumerate() {
        flow = flow.child(flow_of(c, here, &format!("{at}.children[{i}]"))?);
    }
    if let Some(q) = own_queue {
        flow = flow.in_queue(q);
    }
    Ok(flow)
}

/// `spoolctl enqueue --flow FILE|-`.
async fn enqueue_flow(queue: &Queue, source: &str) -> Result<(), Failure> {
    let text = if source == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| usage(format!("cannot read the flow from stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(source)
            .map_err(|e| usage(format!("cannot read --flow {source}: {e}")))?
    };
    let doc: FlowDoc = serde_json::from_str(&text).map_err(|e| {
        usage(format!(
            "the flow document is not valid: {e}; nothing was enqueued"
        ))
    })?;
    let target = match &doc.queue {
        Some(q) if q != queue.name() => queue.client().queue(q)?,
        _ => queue.clone(),
    };
    let flow = flow_of(doc, target.name(), "flow")?;
    for id in target.enqueue_flow(&flow).await? {
        println!("{id}");
    }
    Ok(())
}

pub(crate) async fn enqueue(queue: &Queue, args: EnqueueArgs) -> Result<(), Failure> {
    if let Some(source) = &args.flow {
        return enqueue_flow(queue, source).await;
    }
    let opts = options(&args)?;
    let single = match (&args.payload, &args.file, args.source.as_deref()) {
        (Some(p), _, _) => Some(check_json(p, "--payload")?),
        (None, Some(f), _) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| usage(format!("cannot read --file {}: {e}", f.display())))?;
            Some(check_json(&text, &format!("{}", f.display()))?)
        }
        (None, None, Some("-")) => None,
        (None, None, Some(other)) => {
            return Err(usage(format!(
                "unexpected argument {other:?}: use `-` for NDJSON on stdin"
            )));
        }
        (None, None, None) => {
            return Err(usage(
                "give --payload JSON, --file PATH, or `-` for NDJSON on stdin",
            ));
        }
    };
    if let Some(payload) = single {
        println!("{}", queue.enqueue(payload, opts).await?);
        return Ok(());
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("spoolctl: reading NDJSON jobs from the terminal; end with Ctrl-D");
    }
    // Check every line (JSON, size, options) before sending any, so bad
    // input enqueues nothing.
    // Every job gets its id before anything is sent: a call that times out
    // may still have run on Redis, and only a re-send with the same ids is
    // safe (docs/operations.md).
    let prefix = match &args.id_prefix {
        Some(p) if !p.is_empty() && p.len() <= 200 && !p.contains(char::is_whitespace) => p.clone(),
        Some(p) => {
            return Err(usage(format!(
                "invalid --id-prefix {p:?}: 1 to 200 bytes without whitespace"
            )));
        }
        None => format!("{:016x}", rand_u64()),
    };
    let mut jobs = Vec::new();
    for (i, line) in stdin.lock().lines().enumerate() {
        let line = line.map_err(|e| usage(format!("cannot read stdin: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let what = format!("line {}", i + 1);
        let payload = check_json(&line, &what)?;
        let job = NewJob::with_options(payload, opts.clone().id(format!("{prefix}-{}", i + 1)));
        queue
            .check_job(&job)
            .map_err(|e| usage(format!("{what}: {e}; nothing was enqueued")))?;
        jobs.push(job);
    }
    // A failure part-way (Redis lost) leaves exactly the printed ids enqueued.
    let mut sent = 0usize;
    for chunk in jobs.chunks(STDIN_BATCH) {
        match queue.enqueue_batch(chunk.to_vec()).await {
            Ok(ids) => {
                for id in ids {
                    println!("{id}");
                }
                sent += chunk.len();
            }
            Err(e) => {
                // The call in flight may have run on Redis after we gave up
                // (a frozen or failing-over server): its jobs are uncertain,
                // never reported as not enqueued.
                let uncertain = if e.is_transient() { chunk.len() } else { 0 };
                eprintln!(
                    "spoolctl: {sent} of {} jobs were enqueued (their ids are printed above); {uncertain} more may or may not have been (the call in flight failed: {}); the rest were not. Send the same input again with --id-prefix {prefix} to enqueue exactly what is missing, with no duplicate",
                    jobs.len(),
                    safe(&e.to_string()),
                );
                return Err(e.into());
            }
        }
    }
    Ok(())
}
