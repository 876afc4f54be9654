//! The harness of the cross-process tests: a [`Fleet`] of `sleep_worker`
//! processes run as pods (started, SIGTERMed with a grace period, then
//! SIGKILLed, as the kubelet does), the workers' [`Record`] of handler starts,
//! finishes and stops (from the testkit), and a [`Timeline`] written as CSV under
//! `target/spool-tests/`.

mod proxy;

pub use proxy::FaultProxy;
pub use spool_testkit::{Event, Record};

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use spool_testkit::WorkerProcess;

/// A worker pod.
#[derive(Debug)]
struct Pod {
    process: WorkerProcess,
    /// When SIGTERM was sent, if it was.
    terminating: Option<Instant>,
}

/// Worker processes as a Deployment's pods.
#[derive(Debug)]
pub struct Fleet {
    binary: PathBuf,
    redis_url: String,
    env: Vec<(String, String)>,
    grace: Duration,
    pods: Vec<Pod>,
    /// SIGTERMs sent so far.
    pub terminated: usize,
    /// SIGKILLs sent so far (grace exceeded, or chaos).
    pub killed: usize,
}

impl Fleet {
    /// A fleet of `binary` with these settings; pods get `grace` between
    /// SIGTERM and SIGKILL.
    pub fn new(binary: &Path, redis_url: &str, env: &[(&str, &str)], grace: Duration) -> Self {
        Fleet {
            binary: binary.to_owned(),
            redis_url: redis_url.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            grace,
            pods: Vec::new(),
            terminated: 0,
            killed: 0,
        }
    }

    /// Points new pods at another Redis address (a fault proxy, say).
    pub fn set_redis_url(&mut self, url: &str) {
        self.redis_url = url.to_owned();
    }

    /// Pods not terminating.
    pub fn replicas(&self) -> usize {
        self.pods.iter().filter(|p| p.terminating.is_none()).count()
    }

    /// Starts or SIGTERMs pods (newest first) until `n` are running, and
    /// reaps terminating ones (SIGKILL after the grace period).
    pub fn scale_to(&mut self, n: usize) -> Result<()> {
        while self.replicas() < n {
            let env: Vec<(&str, &str)> = self
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let process = WorkerProcess::spawn(&self.binary, &self.redis_url, &env)?;
            self.pods.push(Pod {
                process,
                terminating: None,
            });
        }
        let mut extra = self.replicas().saturating_sub(n);
        for pod in self.pods.iter_mut().rev() {
            if extra == 0 {
                break;
            }
            if pod.terminating.is_none() {
                pod.process.signal("TERM")?;
                pod.terminating = Some(Instant::now());
                self.terminated += 1;
                extra -= 1;
            }
        }
        self.reap()
    }

    /// Removes exited pods; SIGKILLs those past their grace period; replaces
    /// nothing (scale_to does).
    pub fn reap(&mut self) -> Result<()> {
        let grace = self.grace;
        let mut killed = 0;
        let mut keep = Vec::with_capacity(self.pods.len());
        for mut pod in self.pods.drain(..) {
            if pod.process.try_wait()?.is_some() {
                continue;
            }
            if pod.terminating.is_some_and(|t| t.elapsed() > grace) {
                pod.process.kill();
                killed += 1;
                continue;
            }
            keep.push(pod);
        }
        self.pods = keep;
        self.killed += killed;
        Ok(())
    }

    /// SIGKILLs one running pod chosen at random (a node lost, an OOM kill).
    pub fn kill_random(&mut self) -> bool {
        let running: Vec<usize> = (0..self.pods.len())
            .filter(|&i| self.pods[i].terminating.is_none())
            .collect();
        if running.is_empty() {
            return false;
        }
        let i = running[rand::random_range(0..running.len())];
        let mut pod = self.pods.remove(i);
        pod.process.kill();
        self.killed += 1;
        true
    }

    /// Waits until every pod has exited (SIGKILLing past the grace period).
    pub fn wait_all_gone(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        while !self.pods.is_empty() {
            self.reap()?;
            anyhow::ensure!(
                start.elapsed() < timeout,
                "pods still running after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The logs of the pods still held, for failure messages.
    pub fn logs(&self) -> String {
        self.pods
            .iter()
            .map(|p| p.process.log())
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for pod in &mut self.pods {
            pod.process.kill();
        }
    }
}

/// Rows of numbers against time, written as CSV.
#[derive(Debug)]
pub struct Timeline {
    header: Vec<String>,
    rows: Vec<Vec<f64>>,
}

impl Timeline {
    /// A timeline with these columns (the first is time).
    pub fn new(columns: &[&str]) -> Self {
        Timeline {
            header: columns.iter().map(|c| (*c).into()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn push(&mut self, row: Vec<f64>) {
        self.rows.push(row);
    }

    /// The values of one column.
    pub fn column(&self, name: &str) -> Vec<f64> {
        let i = self.header.iter().position(|h| h == name).unwrap_or(0);
        self.rows.iter().map(|r| r[i]).collect()
    }

    /// Writes `target/spool-tests/<name>.csv` and returns its path.
    pub fn write(&self, name: &str) -> Result<PathBuf> {
        let mut out = self.header.join(",");
        out.push('\n');
        for r in &self.rows {
            let line: Vec<String> = r.iter().map(|v| format!("{v}")).collect();
            let _ = writeln!(out, "{}", line.join(","));
        }
        let path = spool_testkit::artefact_dir().join(format!("{name}.csv"));
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

pub use spool_autoscale::sim::direction_changes;
