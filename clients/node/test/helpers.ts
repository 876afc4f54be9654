// Real servers for the tests: redis-server on free loopback ports (never a
// mock) and the Rust binaries (SPOOL_BIN_DIR, default target/debug).

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(fileURLToPath(new URL(".", import.meta.url)), "../../../..");
const BIN_DIR = process.env.SPOOL_BIN_DIR ?? join(ROOT, "target", "debug");

export async function freePort(below = 65536): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((ok, fail) => {
      const s = createServer();
      s.once("error", fail);
      s.listen(0, "127.0.0.1", () => {
        const a = s.address();
        s.close(() => ok(typeof a === "object" && a ? a.port : 0));
      });
    });
    if (port < below) return port;
  }
}

async function waitPort(port: number, proc: ChildProcess): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const c = connect(port, "127.0.0.1");
      c.once("connect", () => {
        c.destroy();
        r(true);
      });
      c.once("error", () => r(false));
    });
    if (ok) return;
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error(`redis-server on ${port} did not start`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export class RedisProcess {
  private constructor(
    readonly port: number,
    private readonly dir: string,
    private readonly proc: ChildProcess,
  ) {}

  static async start(...extra: string[]): Promise<RedisProcess> {
    const port = await freePort(extra.includes("--cluster-enabled") ? 55536 : 65536);
    const dir = mkdtempSync(join(tmpdir(), "spool-node-redis-"));
    const proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--dir", dir, ...extra], {
      stdio: "ignore",
    });
    await waitPort(port, proc);
    return new RedisProcess(port, dir, proc);
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  stop(): void {
    this.proc.kill("SIGKILL");
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export async function startCluster(): Promise<{ url: string; stop: () => void }> {
  const nodes = await Promise.all(
    [0, 1, 2].map(() => RedisProcess.start("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")),
  );
  const addrs = nodes.map((n) => `127.0.0.1:${n.port}`);
  const made = spawnSync("redis-cli", ["--cluster", "create", ...addrs, "--cluster-yes"], { encoding: "utf8" });
  if (made.status !== 0) throw new Error(`cluster create: ${made.stderr}`);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const info = spawnSync("redis-cli", ["-p", String(nodes[0]?.port), "cluster", "info"], { encoding: "utf8" }).stdout;
    if (info.includes("cluster_state:ok")) break;
    if (Date.now() > deadline) throw new Error(`the cluster never became ok: ${info}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url: `redis+cluster://${addrs.join(",")}`, stop: () => nodes.forEach((n) => n.stop()) };
}

/** A master and one sentinel watching it, as `redis+sentinel://`. */
export async function startSentinel(): Promise<{ url: string; stop: () => void }> {
  const master = await RedisProcess.start();
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "spool-node-sentinel-"));
  const conf = join(dir, "sentinel.conf");
  writeFileSync(conf, `port ${port}\nbind 127.0.0.1\nsentinel monitor spoolmaster 127.0.0.1 ${master.port} 1\n`);
  const proc = spawn("redis-server", [conf, "--sentinel"], { stdio: "ignore" });
  const deadline = Date.now() + 20_000;
  for (;;) {
    const out = spawnSync("redis-cli", ["-p", String(port), "sentinel", "get-master-addr-by-name", "spoolmaster"], { encoding: "utf8" }).stdout;
    if (out.includes(String(master.port))) break;
    if (Date.now() > deadline) throw new Error(`the sentinel never knew the master: ${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `redis+sentinel://127.0.0.1:${port}/spoolmaster`,
    stop: () => {
      proc.kill("SIGKILL");
      master.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function binary(name: string): string {
  for (const p of [join(BIN_DIR, name), join(BIN_DIR, "examples", name)]) if (existsSync(p)) return p;
  throw new Error(`${name} is not built in ${BIN_DIR}: run scripts/test-clients.sh or set SPOOL_BIN_DIR`);
}

export class Worker {
  private readonly proc: ChildProcess;
  private log = "";

  constructor(name: string, url: string, queue: string, env: Record<string, string> = {}) {
    this.proc = spawn(binary(name), [], {
      env: { ...process.env, SPOOL_REDIS_URL: url, SPOOL_QUEUE: queue, SPOOL_METRICS_ADDR: "off", SPOOL_SWEEP_INTERVAL: "200ms", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.proc.stdout?.on("data", (d: Buffer) => (this.log += d.toString()));
    this.proc.stderr?.on("data", (d: Buffer) => (this.log += d.toString()));
  }

  output(): string {
    return this.log;
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode !== null) return;
    const exited = new Promise((r) => this.proc.once("exit", r));
    this.proc.kill("SIGTERM");
    await exited;
  }
}

export function spoolctl(url: string, queue: string, ...args: string[]): string {
  const r = spawnSync(binary("spoolctl"), ["--redis-url", url, "-q", queue, ...args], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`spoolctl ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}
