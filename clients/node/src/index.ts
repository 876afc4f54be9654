/**
 * Producer library for spool queues: enqueue render and encode jobs, follow
 * their progress, cancel them, read stats and dead letters.
 *
 * Speaks the same protocol as the Rust crate (the same Lua scripts, copied
 * in at build time), so jobs enqueued here are run by spool-encoder-worker or
 * any worker built on spool-worker, and read back by spoolctl.
 */

import { randomUUID } from "node:crypto";
import { Cluster, Redis } from "ioredis";

import { EncodeJob } from "./encode.js";
import { LUA } from "./lua.js";
import { CorruptJob, InvalidJob, JobFailed, NotFound, PayloadTooLarge, RedisUnavailable, SpoolError, WaitTimeout } from "./errors.js";

export * from "./encode.js";
export * from "./errors.js";

export const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
/** The queue protocol this library speaks (crates/queue's `PROTOCOL`). */
export const PROTOCOL = 3;
const MAX_BATCH = 1000;
const MAX_BATCH_BYTES = 4 * 1024 * 1024;
const SCRIPT_KEYS = ["ready", "scheduled", "active", "outstanding", "dead", "completed", "cancelled", "seq", "wake"];
const QUEUE_NAME = /^[A-Za-z0-9_.:-]{1,100}$/;

/** Where a job is in its life. */
export type JobState = "ready" | "scheduled" | "active" | "completed" | "dead" | "cancelled" | "waiting";
const FINISHED: ReadonlySet<JobState> = new Set(["completed", "dead", "cancelled"]);

/**
 * A job as `spoolctl inspect --json` shows it (times in ms since the epoch).
 * `P` and `R` are the payload and result types a `Queue<P, R>` declares.
 */
export interface Job<P = unknown, R = unknown> {
  id: string;
  queue: string;
  state: JobState;
  attempts: number;
  maxAttempts: number;
  priority: number;
  /** The payload as stored (text). */
  payload: string;
  /** The payload decoded: the JSON value it holds, else its text. */
  data: P;
  progress: unknown;
  /** The result (decoded JSON), null until the job completes. */
  result: R | null;
  lastError: string | null;
  enqueuedAtMs: number | null;
  runAtMs: number | null;
  startedAtMs: number | null;
  finishedAtMs: number | null;
  cancelRequested: boolean;
  dedupKey: string | null;
  timeoutMs: number | null;
  timeoutRetry: boolean | null;
  /** Every failed attempt, oldest first (the last 20). */
  failures: Failure[];
  /** The flow parent this job is a child of. */
  parent: string | null;
  /** The parent's queue, when it is not this job's. */
  parentQueue: string | null;
  /** How many children it has, when it is a flow's parent. */
  childCount: number | null;
  /** A parent's policy for a child that dies or is cancelled. */
  onChildFailure: "fail" | "continue" | null;
  /** The child whose failure ended this parent (policy "fail"). */
  failedBy: string | null;
}

/**
 * A flow for `enqueueFlow`: a job and the children it waits for, each a
 * `Flow` itself (BullMQ's FlowProducer tree). The parent waits (state
 * `waiting`) until every child has ended, then runs and reads their results.
 * `onChildFailure`: "fail" (default: a child that dies or is cancelled kills
 * the parent and cancels its other children) or "continue" (the parent runs
 * and sees the failures). Every job of a flow lives in the queue it is
 * enqueued on.
 */
export interface Flow {
  payload: Payload;
  options?: JobOptions;
  onChildFailure?: "fail" | "continue";
  children?: Flow[];
}

/** One child of a flow's parent (`children`). */
export interface Child {
  id: string;
  /** Its state now; null once its own retention deleted it. */
  state: JobState | null;
  /** Whether it completed (its result is kept until the parent's hash goes). */
  completed: boolean;
  result: unknown;
  /** Why it failed, once it died or was cancelled. */
  error: string | null;
}

/** Deepest nesting a flow may have (crates/queue's MAX_FLOW_DEPTH). */
const MAX_FLOW_DEPTH = 32;
/** Jobs one flow holds at most (one script call). */
const MAX_FLOW_JOBS = 10_000;

/** One failed attempt of a job (times in ms since the epoch). */
export interface Failure {
  attempt: number;
  startedAtMs: number;
  atMs: number;
  error: string;
}

function decodeFailures(raw: string | undefined): Failure[] {
  try {
    const items = raw ? (JSON.parse(raw) as Record<string, unknown>[]) : [];
    return items.map((x) => ({
      attempt: Number(x.attempt),
      startedAtMs: Number(x.started_at_ms),
      atMs: Number(x.at_ms),
      error: String(x.error),
    }));
  } catch {
    // A damaged field reads as none.
    return [];
  }
}

/** Jobs by state. */
export interface Stats {
  queue: string;
  ready: number;
  scheduled: number;
  active: number;
  outstanding: number;
  dead: number;
  completed: number;
  cancelled: number;
  /** Whether the queue is paused (see `pause`). */
  paused: boolean;
  /** The backlog a paused queue holds. */
  parked: number;
  /** Flow parents waiting for their children (not outstanding work). */
  waiting: number;
}

/** One line of a job's log: its handler's, or FFmpeg's about its input. */
export interface LogLine {
  atMs: number;
  level: "info" | "warning" | "error";
  message: string;
}

/** Where `pause` or `resume` left a queue. */
export interface PauseState {
  paused: boolean;
  /** Since when (server clock, ms since the epoch); null when not paused. */
  pausedAtMs: number | null;
  parked: number;
  ready: number;
  active: number;
}

/** Backlog jobs one pause or resume script call moves (as crates/queue). */
const PAUSE_CHUNK = 10_000;

/** How a job is scheduled and retried. Durations in milliseconds. */
export interface JobOptions {
  priority?: number;
  delayMs?: number;
  dedupKey?: string;
  maxAttempts?: number;
  leaseMs?: number;
  retentionMs?: number;
  backoffMs?: number;
  backoffMaxMs?: number;
  jobId?: string;
  /** The job's own time limit: past it the worker cancels the handling and fails the job "timed out after …" (unset: the worker's limit). */
  timeoutMs?: number;
  /** Retry a timed-out attempt (true) or not (false); unset: the worker's SPOOL_JOB_TIMEOUT_RETRY. */
  timeoutRetry?: boolean;
}

/**
 * What `enqueue` takes: any object (an `interface` value, a class
 * instance, an array) sent as JSON, a string or Buffer sent as it is, or an
 * `EncodeJob`.
 */
export type Payload = object | string | Buffer | EncodeJob;

export interface QueueOptions {
  maxPayloadBytes?: number;
  connectTimeoutMs?: number;
}

/** What each script is made of after lib.lua, as crates/queue composes them (its `SCRIPT_PARTS`; a test holds the two equal). */
const SCRIPT_PARTS: Record<string, string[]> = {
  "enqueue.lua": ["lib_enqueue.lua"],
  "cancel.lua": ["lib_flows.lua"],
  "dead.lua": ["lib_flows.lua"],
  "pause.lua": [],
  "watch.lua": [],
  "flow.lua": ["lib_flows.lua", "lib_enqueue.lua"],
};

function script(name: string): string {
  return ["lib.lua", ...(SCRIPT_PARTS[name] ?? []), name].map((p) => LUA[p] ?? "").join("");
}

function range(field: string, v: number | undefined, lo: number, hi: number, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !Number.isFinite(v) || v < lo || v > hi)
    throw new InvalidJob(field, `${String(v)} is outside ${lo}..=${hi}`);
  return Math.round(v);
}

const OPTION_KEYS = new Set([
  "priority", "delayMs", "dedupKey", "maxAttempts", "leaseMs", "retentionMs",
  "backoffMs", "backoffMaxMs", "jobId", "timeoutMs", "timeoutRetry",
]);
/** BullMQ's names for what spool calls otherwise: a silent mismatch would drop a delay. */
const BULLMQ_NAMES: Record<string, string> = {
  delay: "delayMs",
  attempts: "maxAttempts",
  backoff: "backoffMs",
  removeOnComplete: "retentionMs",
  removeOnFail: "retentionMs",
  timeout: "timeoutMs",
  lifo: "priority",
};

function optionArgs(o: JobOptions): (string | number)[] {
  for (const k of Object.keys(o)) {
    if (!OPTION_KEYS.has(k)) {
      const hint = BULLMQ_NAMES[k] ? ` (spool's is ${BULLMQ_NAMES[k]})` : "";
      throw new InvalidJob(k, `is not a job option${hint}`);
    }
  }
  const priority = o.priority ?? 0;
  if (!Number.isInteger(priority) || priority < -1000 || priority > 1000)
    throw new InvalidJob("priority", `${priority} must be an integer within -1000..=1000`);
  const attempts = o.maxAttempts ?? 5;
  if (!Number.isInteger(attempts) || attempts < 1 || attempts > 10_000)
    throw new InvalidJob("maxAttempts", `${attempts} must be within 1..=10000`);
  const day = 86_400_000;
  const delay = range("delayMs", o.delayMs, 0, 366 * day, 0);
  const lease = range("leaseMs", o.leaseMs, 100, day, 30_000);
  const backoff = range("backoffMs", o.backoffMs, 0, day, 1_000);
  const backoffMax = range("backoffMaxMs", o.backoffMaxMs, 0, day, 300_000);
  if (backoffMax < backoff) throw new InvalidJob("backoffMaxMs", "must not be shorter than backoffMs");
  const retentionS = Math.floor(range("retentionMs", o.retentionMs, 0, 366 * day, day) / 1000);
  if (o.dedupKey !== undefined && !(Buffer.byteLength(o.dedupKey) >= 1 && Buffer.byteLength(o.dedupKey) <= 256))
    throw new InvalidJob("dedupKey", "must be 1 to 256 bytes");
  if (o.jobId !== undefined && (!(Buffer.byteLength(o.jobId) >= 1 && Buffer.byteLength(o.jobId) <= 256) || /\s/.test(o.jobId)))
    throw new InvalidJob("jobId", "must be 1 to 256 bytes without whitespace");
  const timeout = range("timeoutMs", o.timeoutMs, 1, 31 * day, 0);
  if (o.timeoutRetry !== undefined && typeof o.timeoutRetry !== "boolean")
    throw new InvalidJob("timeoutRetry", `${String(o.timeoutRetry)} must be true, false or unset`);
  const retry = o.timeoutRetry === undefined ? "" : o.timeoutRetry ? "1" : "0";
  return [priority, delay, attempts, backoff, backoffMax, lease, retentionS, o.dedupKey ?? "", timeout, retry];
}

function encodePayload(p: Payload, limit: number): Buffer {
  let data: Buffer;
  if (Buffer.isBuffer(p)) data = p;
  else if (typeof p === "string") data = Buffer.from(p);
  else if (p instanceof EncodeJob) data = Buffer.from(JSON.stringify(p.toSpec()));
  else if (typeof p === "object" && p !== null) {
    let text: string;
    try {
      text = JSON.stringify(p);
    } catch (e) {
      // A BigInt, a cycle: not JSON.
      throw new InvalidJob("payload", `is not JSON: ${e instanceof Error ? e.message : String(e)}`);
    }
    data = Buffer.from(text);
  }
  else throw new InvalidJob("payload", "must be an object, array, string, Buffer or EncodeJob");
  if (data.length > limit) throw new PayloadTooLarge(data.length, limit);
  return data;
}

function jsonOrText(v: string | undefined): unknown {
  if (v === undefined || v === "") return null;
  try {
    return JSON.parse(v);
  } catch {
    return v;
  }
}

/** A parsed `redis+sentinel://[user:password@]host1[:port],host2[:port]/<master>[/db]`. */
export interface SentinelUrl {
  sentinels: { host: string; port: number }[];
  master: string;
  db: number;
  username?: string;
  password?: string;
  tls: boolean;
}

const SENTINEL_EXPECTED = "expected redis+sentinel://[user:password@]host1:26379,host2:26379/<master-name>[/db]";

/** Whether `url` names a master through Redis Sentinel. */
export function isSentinel(url: string): boolean {
  return /^rediss?\+sentinel:\/\//.test(url);
}

/** Parses a Sentinel URL as the Rust client does; `InvalidJob("url", …)` says what is wrong. */
export function parseSentinelUrl(url: string): SentinelUrl {
  const tls = url.startsWith("rediss+");
  let rest = url.replace(/^rediss?\+sentinel:\/\//, "");
  const shown = url.replace(/\/\/[^@/]*@/, "//***@");
  let auth: string | undefined;
  const at = rest.split("/")[0]?.lastIndexOf("@") ?? -1;
  if (at >= 0) {
    auth = rest.slice(0, at);
    rest = rest.slice(at + 1);
  }
  const [hosts = "", ...path] = rest.split("/");
  const parts = path.filter((p) => p !== "");
  if (hosts === "" || parts.length === 0 || parts.length > 2) throw new InvalidJob("url", `${shown}: no master name (${SENTINEL_EXPECTED})`);
  const sentinels = hosts.split(",").map((h) => {
    const m = /^\[?([^\]]*?)\]?(?::([^:\]]*))?$/.exec(h.trim());
    const host = m?.[1] ?? "";
    const port = m?.[2] === undefined ? 26379 : Number(m[2]);
    if (host === "") throw new InvalidJob("url", `${shown}: an empty sentinel address (${SENTINEL_EXPECTED})`);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new InvalidJob("url", `${shown}: bad port in ${h} (${SENTINEL_EXPECTED})`);
    return { host, port };
  });
  const db = parts.length === 2 ? Number(parts[1]) : 0;
  if (!Number.isInteger(db) || db < 0) throw new InvalidJob("url", `${shown}: bad database ${parts[1] ?? ""} (${SENTINEL_EXPECTED})`);
  let username: string | undefined;
  let password: string | undefined;
  if (auth !== undefined) {
    const i = auth.indexOf(":");
    username = decodeURIComponent(i >= 0 ? auth.slice(0, i) : auth) || undefined;
    password = i >= 0 ? decodeURIComponent(auth.slice(i + 1)) : undefined;
  }
  return { sentinels, master: decodeURIComponent(parts[0] ?? ""), db, username, password, tls };
}

function maskedAddr(url: string): string {
  if (isSentinel(url)) {
    try {
      const s = parseSentinelUrl(url);
      return `sentinel ${s.sentinels.map((x) => `${x.host}:${x.port}`).join(",")} master ${s.master}/${s.db}`;
    } catch {
      return "(malformed Sentinel URL)";
    }
  }
  try {
    const first = url.split(",")[0] ?? url;
    const u = new URL(first.replace(/^rediss?\+cluster:/, "redis:"));
    const db = u.pathname.replace(/^\//, "") || "0";
    return `${u.hostname}:${u.port || "6379"}/${db}`;
  } catch {
    return "(malformed URL)";
  }
}

type Client = (Redis | Cluster) & {
  spoolWatch(...args: (string | number)[]): Promise<unknown>;
  spoolEnqueue(...args: (string | number | Buffer)[]): Promise<unknown>;
  spoolCancel(...args: (string | number)[]): Promise<unknown>;
  spoolDead(...args: (string | number)[]): Promise<unknown>;
  spoolPause(...args: (string | number)[]): Promise<unknown>;
  spoolFlow(...args: (string | number | Buffer)[]): Promise<unknown>;
};

/** One job of `enqueueMany` with options of its own (BullMQ's `addBulk` entries). */
export class BulkJob {
  constructor(
    readonly payload: Payload,
    readonly options?: JobOptions,
  ) {}
}

/** One spool queue, for producers. */
export class Queue<P extends Payload = Payload, R = unknown> {
  readonly addr: string;
  readonly prefix: string;
  private readonly keys: string[];
  private readonly redis: Client;
  private readonly password: string | undefined;
  private readonly maxPayloadBytes: number;
  /** When the queue was last added to the queue index. */
  private registeredAt = -Infinity;
  private closed = false;
  /** Worker protocols already warned about. */
  private readonly protocolsSeen = new Set<number>();
  /** Whether the connection is this queue's own (else the caller's). */
  private owned = true;
  /** The blocking connection that reads the events stream for every `wait`. */
  private reader: (Redis | Cluster) | undefined;
  private readonly waiters = new Map<string, Set<Waiter>>();
  private reading = false;
  private readPos = "0-0";

  /**
   * `url`: `redis://`, `rediss://`, `redis+sentinel://` or a cluster URL; or
   * an ioredis `Redis` / `Cluster` of your own, which `close()` leaves open.
   */
  constructor(
    url: string | Redis | Cluster,
    readonly name = "encode",
    options: QueueOptions = {},
  ) {
    if (!QUEUE_NAME.test(name)) throw new InvalidJob("queue", `'${name}': use 1 to 100 ASCII letters, digits and - _ . :`);
    this.prefix = `spool:{${name}}:`;
    this.keys = SCRIPT_KEYS.map((k) => this.prefix + k);
    this.maxPayloadBytes = options.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD;
    if (typeof url !== "string") {
      // The caller's client: used as it is, never closed here.
      this.owned = false;
      this.redis = url as Client;
      const o = url instanceof Cluster ? undefined : url.options;
      this.addr = o ? `${o.host ?? "127.0.0.1"}:${o.port ?? 6379}/${o.db ?? 0}` : "cluster";
      this.password = o?.password;
      this.defineScripts();
      return;
    }
    this.addr = maskedAddr(url);
    const common = {
      connectTimeout: options.connectTimeoutMs ?? 3000,
      maxRetriesPerRequest: 1,
      lazyConnect: true,
      retryStrategy: (times: number) => Math.min(times * 100, 1000),
    };
    const isCluster = !isSentinel(url) && (/^rediss?\+cluster:\/\//.test(url) || url.includes(","));
    if (isSentinel(url)) {
      // The master the sentinels name, asked again on every reconnect.
      const s = parseSentinelUrl(url);
      this.password = s.password;
      this.redis = new Redis({
        ...common,
        sentinels: s.sentinels,
        name: s.master,
        db: s.db,
        username: s.username,
        password: s.password,
        ...(s.tls ? { tls: {}, enableTLSForSentinelMode: true } : {}),
        sentinelRetryStrategy: (times: number) => (times > 3 ? null : times * 100),
      }) as Client;
    } else if (isCluster) {
      const rest = url.replace(/^rediss?\+cluster:\/\//, "");
      const nodes = rest.split(",").map((part) => {
        const u = new URL(`redis://${part.replace(/^rediss?:\/\//, "")}`);
        return { host: u.hostname, port: Number(u.port || 6379), password: u.password || undefined };
      });
      this.password = nodes.find((n) => n.password)?.password;
      this.redis = new Cluster(
        nodes.map(({ host, port }) => ({ host, port })),
        { redisOptions: { ...common, password: this.password }, lazyConnect: true, clusterRetryStrategy: () => null },
      ) as Client;
    } else {
      this.password = (() => {
        try {
          return decodeURIComponent(new URL(url).password) || undefined;
        } catch {
          return undefined;
        }
      })();
      this.redis = new Redis(url, common) as Client;
    }
    // A dead connection must not print to stderr: errors reach the caller.
    this.redis.on("error", () => undefined);
    this.defineScripts();
  }

  private defineScripts(): void {
    this.redis.defineCommand("spoolEnqueue", { numberOfKeys: 9, lua: script("enqueue.lua") });
    this.redis.defineCommand("spoolCancel", { numberOfKeys: 9, lua: script("cancel.lua") });
    this.redis.defineCommand("spoolDead", { numberOfKeys: 9, lua: script("dead.lua") });
    this.redis.defineCommand("spoolPause", { numberOfKeys: 9, lua: script("pause.lua") });
    this.redis.defineCommand("spoolWatch", { numberOfKeys: 9, lua: script("watch.lua") });
    this.redis.defineCommand("spoolFlow", { numberOfKeys: 9, lua: script("flow.lua") });
  }

  /**
   * Closes the connections (waits in progress end with `RedisUnavailable`);
   * a client passed in stays open.
   */
  async close(): Promise<void> {
    this.closed = true;
    this.reader?.disconnect();
    if (this.owned) this.redis.disconnect();
  }

  private async run<T>(f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (e) {
      if (e instanceof SpoolError) throw e;
      const raw = e instanceof Error ? e.message : String(e);
      const msg = this.password ? raw.split(this.password).join("***") : raw;
      if (/spool: (invalid|expected)|must be new jobs/.test(msg)) throw new InvalidJob("job", msg.replace(/^.*spool: /, ""));
      if (e instanceof Error && (e.name === "ReplyError" || /NOSCRIPT|WRONGTYPE/.test(msg)) && !/NOAUTH|WRONGPASS/.test(msg))
        throw new SpoolError(`Redis refused a command: ${msg}`);
      throw new RedisUnavailable(this.addr, msg);
    }
  }

  /**
   * Enqueues one job and returns its id (the live job's id for a `dedupKey`
   * already held, or for a `jobId` that exists: retrying is safe).
   */
  async enqueue(payload: P, options: JobOptions = {}): Promise<string> {
    const ids = await this.enqueueMany([payload], options);
    return ids[0] as string;
  }

  /** Enqueues many jobs with the same options, a thousand per script call; ids in input order. */
  async enqueueMany(payloads: (P | BulkJob)[], options: JobOptions = {}): Promise<string[]> {
    const sharing = payloads.filter((p) => !(p instanceof BulkJob)).length;
    if (options.jobId !== undefined && sharing > 1) throw new InvalidJob("jobId", "one id cannot name several jobs");
    if (options.dedupKey !== undefined && sharing > 1)
      throw new InvalidJob("dedupKey", "one dedup key cannot name several jobs (they would be one job): give each its own in a BulkJob");
    const shared = optionArgs(options);
    // Every job checked (and encoded) before anything is sent.
    const jobs = payloads.map((p) =>
      p instanceof BulkJob
        ? { data: encodePayload(p.payload, this.maxPayloadBytes), opts: optionArgs(p.options ?? options), id: (p.options ?? options).jobId }
        : { data: encodePayload(p, this.maxPayloadBytes), opts: shared, id: options.jobId },
    );
    const entries = jobs.map((j) => j.data);
    return this.run(async () => {
      await this.register();
      const ids: string[] = [];
      let start = 0;
      while (start < entries.length) {
        let end = start;
        let bytes = 0;
        while (end < entries.length && end - start < MAX_BATCH) {
          const len = (entries[end] as Buffer).length;
          if (end > start && bytes + len > MAX_BATCH_BYTES) break;
          bytes += len;
          end++;
        }
        const args: (string | number | Buffer)[] = [...this.keys, this.prefix, this.name, end - start];
        for (let i = start; i < end; i++) {
          const j = jobs[i] as (typeof jobs)[number];
          args.push(j.id ?? randomUUID().replaceAll("-", ""), j.data, ...j.opts);
        }
        const reply = (await this.redis.spoolEnqueue(...args)) as unknown[];
        ids.push(...reply.map((x) => String(x)));
        start = end;
      }
      return ids;
    });
  }

  /**
   * Enqueues a flow in one script call, all of it or nothing; returns its ids
   * in document order (depth first), the parent's first. A flow whose root
   * exists already (its `jobId`, or a live `dedupKey`) is not enqueued again:
   * its ids come back. Children must be new jobs.
   */
  async enqueueFlow(flow: Flow): Promise<string[]> {
    const args: (string | number | Buffer)[] = [...this.keys, this.prefix, this.name, 0];
    let n = 0;
    // Every node checked and encoded before anything is sent.
    const walk = (node: Flow, parent: number, depth: number): void => {
      if (depth > MAX_FLOW_DEPTH) throw new InvalidJob("flow", `flows nest at most ${MAX_FLOW_DEPTH} levels`);
      const policy = node.onChildFailure ?? "fail";
      if (policy !== "fail" && policy !== "continue")
        throw new InvalidJob("onChildFailure", `'${String(policy)}' must be 'fail' or 'continue'`);
      const o = node.options ?? {};
      args.push(o.jobId ?? randomUUID().replaceAll("-", ""), encodePayload(node.payload, this.maxPayloadBytes), ...optionArgs(o), parent, policy);
      const me = ++n;
      for (const c of node.children ?? []) walk(c, me, depth + 1);
    };
    walk(flow, 0, 0);
    if (n > MAX_FLOW_JOBS) throw new InvalidJob("flow", `${n} jobs; one flow holds at most ${MAX_FLOW_JOBS}`);
    args[this.keys.length + 2] = n;
    const ids = await this.run(async () => {
      await this.register();
      return ((await this.redis.spoolFlow(...args)) as unknown[]).map((x) => String(x));
    });
    if (ids.length !== n)
      throw new InvalidJob("flow", `a flow with root ${ids[0] ?? "?"} exists already with ${ids.length} jobs, not ${n}: give a new flow a new root id`);
    return ids;
  }

  /**
   * The children of flow parent `jobId`, in document order, with their
   * results and errors (kept until the parent's own hash goes). Empty for a
   * job without children.
   */
  async children(jobId: string): Promise<Child[]> {
    return this.run(async () => {
      const [ids, results, failures] = await Promise.all([
        this.redis.lrange(`${this.prefix}children:${jobId}`, 0, -1),
        this.redis.hgetall(`${this.prefix}results:${jobId}`),
        this.redis.hgetall(`${this.prefix}failures:${jobId}`),
      ]);
      const states = await Promise.all(ids.map((c) => this.redis.hget(`${this.prefix}job:${c}`, "state").catch(() => null)));
      return ids.map((id, i) => {
        const raw = results[id];
        let result: unknown = null;
        if (raw !== undefined) {
          try {
            result = JSON.parse(raw);
          } catch {
            result = raw;
          }
        }
        return { id, state: (states[i] as JobState | null) ?? null, completed: raw !== undefined, result, error: failures[id] ?? null };
      });
    });
  }

  /**
   * Adds the queue to the queue index, again every 10 s: a Redis restarted
   * without persistence forgets it while this producer lives on.
   */
  private async register(): Promise<void> {
    if (Date.now() - this.registeredAt >= 10_000) {
      await this.redis.sadd("spool:queues", this.name);
      this.registeredAt = Date.now();
      await this.checkProtocol();
    }
  }

  /** The job's state, attempts, progress, result and times. */
  async get(jobId: string): Promise<Job<P, R>> {
    const key = `${this.prefix}job:${jobId}`;
    const h = await this.run(() => this.redis.hgetall(key));
    if (Object.keys(h).length === 0) throw new NotFound(this.name, jobId);
    return decodeJob(key, this.name, h) as Job<P, R>;
  }

  /** The job's log, oldest line first: what its handler logged and, for an encode, FFmpeg's warnings about its input (the latest 200). */
  async log(jobId: string): Promise<LogLine[]> {
    const raw = await this.run(() => this.redis.lrange(`${this.prefix}log:${jobId}`, 0, -1));
    return raw.map((r) => {
      try {
        const d = JSON.parse(r) as { at_ms: number; level: LogLine["level"]; message: string };
        return { atMs: Number(d.at_ms), level: d.level, message: String(d.message) };
      } catch {
        return { atMs: 0, level: "info" as const, message: r };
      }
    });
  }

  /**
   * Waits until the job is completed, dead or cancelled and returns it,
   * calling `onProgress` with each new progress value. Throws `WaitTimeout`
   * after `timeoutMs` (the job goes on), and with `raiseOnFailure`
   * `JobFailed` (with its last error) for a dead job. Redis restarting or
   * unreachable meanwhile is waited out until the deadline.
   */
  /**
   * Waits until the job is completed, dead or cancelled and returns it.
   * Events, not polling: the job is marked watched and its events come over
   * the queue's events stream (one blocking connection reads it for every
   * `wait` of this `Queue`). A job deleted as it completes (`retention: 0`)
   * still returns, with the result its event carried. Redis restarting is
   * waited out until the deadline. `raiseOnFailure` throws `JobFailed` for a
   * dead job; `WaitTimeout` after `timeoutMs` (the job goes on).
   */
  async wait(
    jobId: string,
    opts: { timeoutMs?: number; onProgress?: (p: unknown) => void; pollMs?: number; raiseOnFailure?: boolean } = {},
  ): Promise<Job<P, R>> {
    const timeoutMs = opts.timeoutMs ?? 600_000;
    const deadline = Date.now() + timeoutMs;
    const pause = () => new Promise((r) => setTimeout(r, opts.pollMs ?? 200));
    let ended: JobEvent | null = null;
    let wake: () => void = () => undefined;
    const waiter: Waiter = {
      onEvent: (ev) => {
        if (ev.event === "progress") opts.onProgress?.(ev.data);
        else if (ev.event === "completed" || ev.event === "dead" || ev.event === "cancelled") {
          ended = ev;
          wake();
        }
      },
      quiet: () => wake(),
    };
    let set = this.waiters.get(jobId);
    if (!set) this.waiters.set(jobId, (set = new Set()));
    set.add(waiter);
    try {
      // Watched first, then read: every event after the watch is the reader's.
      let state = "";
      for (;;) {
        try {
          // The job's state, the stream's last id and the job's progress.
          const reply = (await this.run(() => this.redis.spoolWatch(...this.keys, this.prefix, jobId))) as [string, string, string];
          state = String(reply[0] ?? "");
          if (state && reply[2]) opts.onProgress?.(jsonOrText(reply[2]));
          if (!this.reading) this.readPos = String(reply[1] ?? "0-0");
          break;
        } catch (e) {
          if (!(e instanceof RedisUnavailable) || Date.now() >= deadline) throw e;
          await pause();
        }
      }
      if (!state) throw new NotFound(this.name, jobId);
      if (FINISHED.has(state as JobState)) return await this.ended(jobId, null, opts.raiseOnFailure);
      this.startReading();
      for (;;) {
        if (ended) return await this.ended(jobId, ended, opts.raiseOnFailure);
        const left = deadline - Date.now();
        if (left <= 0) throw new WaitTimeout(jobId, timeoutMs, state);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, Math.min(left, 2000));
          wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
        if (ended) return await this.ended(jobId, ended, opts.raiseOnFailure);
        if (this.closed) throw new RedisUnavailable(this.addr, "the queue was closed");
        // Quiet: ask the job itself, in case its event was lost (a Redis
        // restart without persistence).
        try {
          const s = await this.run(() => this.redis.hget(`${this.prefix}job:${jobId}`, "state"));
          if (s === null || s === undefined) throw new NotFound(this.name, jobId);
          state = s;
          if (FINISHED.has(s as JobState)) return await this.ended(jobId, null, opts.raiseOnFailure);
        } catch (e) {
          if (!(e instanceof RedisUnavailable)) throw e;
        }
      }
    } finally {
      set.delete(waiter);
      if (set.size === 0) this.waiters.delete(jobId);
    }
  }

  /** The finished job: read whole, or from its end event once deleted. */
  private async ended(jobId: string, ev: JobEvent | null, raise?: boolean): Promise<Job<P, R>> {
    let job: Job<P, R>;
    try {
      job = await this.get(jobId);
    } catch (e) {
      if (!(e instanceof NotFound) || !ev) throw e;
      job = jobFromEvent(this.name, ev) as Job<P, R>;
    }
    if (raise && job.state === "dead") throw new JobFailed(job.id, job.lastError);
    return job;
  }

  /**
   * Warns (`process.emitWarning`, type `ProtocolMismatch`) once per version
   * when a live worker speaks another queue protocol than this library:
   * jobs still run, but the newer side's features may be missing.
   */
  private async checkProtocol(): Promise<void> {
    const ids = await this.redis.zrevrange(`${this.prefix}workers`, 0, 49);
    if (ids.length === 0) return;
    const records = await this.redis.mget(ids.map((id) => `${this.prefix}worker:${id}`));
    for (const raw of records) {
      if (!raw) continue;
      let theirs: number;
      try {
        theirs = Number((JSON.parse(raw) as { protocol?: number }).protocol ?? 1);
      } catch {
        continue;
      }
      if (theirs === PROTOCOL || this.protocolsSeen.has(theirs)) continue;
      this.protocolsSeen.add(theirs);
      const older = theirs < PROTOCOL ? "the workers" : "this library (spool-client)";
      process.emitWarning(
        `queue '${this.name}': a live worker speaks queue protocol ${theirs}, spool-client speaks ${PROTOCOL}; jobs still run, but upgrade ${older}`,
        "ProtocolMismatch",
      );
    }
  }

  /** Reads the events stream for the waiters until none is left. */
  private startReading(): void {
    if (this.reading) return;
    this.reading = true;
    if (!this.reader) {
      this.reader = this.redis.duplicate();
      this.reader.on("error", () => undefined);
    }
    const reader = this.reader;
    const key = `${this.prefix}events`;
    void (async () => {
      try {
        while (this.waiters.size > 0 && !this.closed) {
          let reply: unknown;
          try {
            reply = await reader.xread("COUNT", 500, "BLOCK", 2000, "STREAMS", key, this.readPos);
          } catch {
            await new Promise((r) => setTimeout(r, 200));
            continue;
          }
          const events = decodeEvents(reply);
          for (const ev of events) {
            this.readPos = ev.id;
            for (const w of this.waiters.get(ev.jobId) ?? []) w.onEvent(ev);
          }
          if (events.length === 0) for (const set of this.waiters.values()) for (const w of set) w.quiet();
        }
      } finally {
        this.reading = false;
        if (this.waiters.size > 0 && !this.closed) this.startReading();
      }
    })();
  }

  /**
   * Every job event of the queue as it happens (completed, failed, dead,
   * cancelled, progress), after `lastId` (default: from now on; give an
   * event's `id` to resume after it), like BullMQ's `QueueEvents`. While it
   * is iterated the queue's scripts write every job's events; 30 s after it
   * stops they stop. Ends when `signal` aborts. Redis restarting is waited
   * out, resuming where it left off.
   */
  async *events(opts: { lastId?: string; signal?: AbortSignal } = {}): AsyncGenerator<JobEvent> {
    const conn = this.redis.duplicate();
    conn.on("error", () => undefined);
    const key = `${this.prefix}events`;
    let last = opts.lastId ?? "$";
    let renewed = 0;
    const stop = () => conn.disconnect();
    opts.signal?.addEventListener("abort", stop);
    try {
      while (!opts.signal?.aborted && !this.closed) {
        let reply: unknown;
        try {
          if (Date.now() - renewed > LISTENING_MS / 3) {
            await conn.set(`${this.prefix}listening`, "1", "PX", LISTENING_MS);
            if (last === "$") {
              const top = (await conn.xrevrange(key, "+", "-", "COUNT", 1)) as [string, string[]][];
              last = top[0]?.[0] ?? "0-0";
            }
            renewed = Date.now();
          }
          reply = await conn.xread("COUNT", 500, "BLOCK", 1000, "STREAMS", key, last);
        } catch {
          if (opts.signal?.aborted) break;
          await new Promise((r) => setTimeout(r, 200));
          continue;
        }
        for (const ev of decodeEvents(reply)) {
          last = ev.id;
          yield ev;
        }
      }
    } finally {
      opts.signal?.removeEventListener("abort", stop);
      conn.disconnect();
    }
  }

  async cancel(jobId: string): Promise<string> {
    const reply = String(await this.run(() => this.redis.spoolCancel(...this.keys, this.prefix, jobId)));
    if (reply === "not_found") throw new NotFound(this.name, jobId);
    return reply;
  }

  /** Jobs by state. */
  async stats(): Promise<Stats> {
    const [ready, scheduled, active, outstanding, dead, completed, cancelled, parked, waiting, paused] = await this.run(async () => {
      const k = (s: string) => this.prefix + s;
      const res = await this.redis
        .multi()
        .zcard(k("ready"))
        .zcard(k("scheduled"))
        .zcard(k("active"))
        .scard(k("outstanding"))
        .zcard(k("dead"))
        .zcard(k("completed"))
        .zcard(k("cancelled"))
        .zcard(k("parked"))
        .zcard(k("waiting"))
        .exists(k("paused"))
        .exec();
      return (res ?? []).map(([err, v]) => {
        if (err) throw err;
        return Number(v);
      });
    });
    return { queue: this.name, ready: ready ?? 0, scheduled: scheduled ?? 0, active: active ?? 0, outstanding: outstanding ?? 0, dead: dead ?? 0, completed: completed ?? 0, cancelled: cancelled ?? 0, paused: paused === 1, parked: parked ?? 0, waiting: waiting ?? 0 };
  }

  /**
   * Pauses the queue: nothing more starts, running jobs finish, enqueues are
   * still accepted, and both keys KEDA reads stop counting the backlog (held
   * aside in order), so the fleet scales to zero. Idempotent.
   */
  async pause(): Promise<PauseState> {
    for (;;) {
      const s = await this.pauseCall("pause");
      if (!s.paused || s.ready === 0) return s;
    }
  }

  /** Resumes a paused queue: its backlog comes back in its order. */
  async resume(): Promise<PauseState> {
    for (;;) {
      const s = await this.pauseCall("resume");
      if (s.paused || s.parked === 0) return s;
    }
  }

  /** Whether the queue is paused, and how much it holds. */
  async pauseState(): Promise<PauseState> {
    return this.pauseCall("status");
  }

  private async pauseCall(action: string): Promise<PauseState> {
    const reply = (await this.run(() => this.redis.spoolPause(...this.keys, this.prefix, action, PAUSE_CHUNK))) as number[];
    const [paused, parked, ready, active, at] = reply.map(Number);
    return { paused: paused === 1, pausedAtMs: at ? at : null, parked: parked ?? 0, ready: ready ?? 0, active: active ?? 0 };
  }

  /** Dead jobs, newest first: the ids, then every hash in one pipelined round trip. */
  /** Dead jobs, newest first. */
  async dead(limit = 100, offset = 0): Promise<Job<P, R>[]> {
    return this.jobs("dead", { limit, offset });
  }

  /**
   * A page of the jobs in `state`, as the console and `spoolctl jobs` list
   * them: `ready` in the order they will run (a paused queue's held jobs
   * after the rest), every other state newest first. Walk a state with
   * `offset += limit` until a page comes back short.
   */
  async jobs(state: JobState, opts: { limit?: number; offset?: number } = {}): Promise<Job<P, R>[]> {
    const limit = opts.limit ?? 50;
    const offset = opts.offset ?? 0;
    if (!["ready", "scheduled", "active", "completed", "dead", "cancelled", "waiting"].includes(state))
      throw new InvalidJob("state", `'${String(state)}': one of ready, scheduled, active, completed, dead, cancelled, waiting`);
    if (!Number.isInteger(limit) || !Number.isInteger(offset) || offset < 0 || limit > 1000)
      throw new InvalidJob("limit", "limit is an integer up to 1000 and offset one from 0");
    if (limit <= 0) return [];
    const ids = await this.run(async () => {
      const key = this.prefix + state;
      const end = offset + limit - 1;
      const got = state === "ready" ? await this.redis.zrange(key, offset, end) : await this.redis.zrevrange(key, offset, end);
      if (state === "ready" && got.length < limit) {
        const inReady = await this.redis.zcard(key);
        const from = Math.max(0, offset + got.length - inReady);
        got.push(...(await this.redis.zrange(this.prefix + "parked", from, from + limit - got.length - 1)));
      }
      return got;
    });
    return (await this.getMany(ids)).filter((j): j is Job<P, R> => j !== null);
  }

  /** Several jobs in one round trip, in the order asked; `null` for an id with no job. */
  async getMany(jobIds: string[]): Promise<(Job<P, R> | null)[]> {
    if (jobIds.length === 0) return [];
    return this.run(async () => {
      const pipe = this.redis.pipeline();
      for (const id of jobIds) pipe.hgetall(`${this.prefix}job:${id}`);
      const hashes = (await pipe.exec()) ?? [];
      return jobIds.map((id, i) => {
        const [err, h] = hashes[i] ?? [null, {}];
        if (err) throw err;
        const hash = h as Record<string, string>;
        return Object.keys(hash).length > 0 ? (decodeJob(`${this.prefix}job:${id}`, this.name, hash) as Job<P, R>) : null;
      });
    });
  }

  async retryDead(ids?: string[], limit = 1000): Promise<number> {
    return Number(await this.run(() => this.redis.spoolDead(...this.keys, this.prefix, "retry", Math.max(1, limit), ...(ids ?? []))));
  }

  /** Deletes dead jobs; returns how many. */
  async purgeDead(ids?: string[], limit = 1000): Promise<number> {
    return Number(await this.run(() => this.redis.spoolDead(...this.keys, this.prefix, "purge", Math.max(1, limit), ...(ids ?? []))));
  }
}

function decodeJob(key: string, queue: string, h: Record<string, string>): Job {
  const num = (f: string): number | null => {
    const v = h[f];
    if (v === undefined || v === "") return null;
    const n = Number(v);
    if (Number.isNaN(n)) throw new CorruptJob(`${key}: field ${f} is '${v}', not a number`);
    return Math.trunc(n);
  };
  const state = h.state as JobState | undefined;
  if (state === undefined || !["ready", "scheduled", "active", "completed", "dead", "cancelled", "waiting"].includes(state))
    throw new CorruptJob(`${key}: state '${String(state)}' is not a job state`);
  return {
    id: h.id || key.split(":").pop() || "",
    queue: h.queue || queue,
    state,
    attempts: num("attempts") ?? 0,
    maxAttempts: num("max_attempts") ?? 1,
    priority: num("priority") ?? 0,
    payload: h.payload ?? "",
    data: h.payload ? jsonOrText(h.payload) : null,
    progress: jsonOrText(h.progress),
    result: jsonOrText(h.result),
    lastError: h.last_error || null,
    enqueuedAtMs: num("enqueued_at"),
    runAtMs: num("run_at"),
    startedAtMs: num("started_at"),
    finishedAtMs: num("finished_at"),
    cancelRequested: h.cancel === "1",
    dedupKey: h.dedup || null,
    timeoutMs: num("timeout_ms") || null,
    timeoutRetry: h.timeout_retry === "1" ? true : h.timeout_retry === "0" ? false : null,
    failures: decodeFailures(h.failures),
    parent: h.parent || null,
    parentQueue: h.parent_queue || null,
    childCount: h.kids === undefined ? null : Number(h.kids),
    onChildFailure: h.on_child_failure === "fail" || h.on_child_failure === "continue" ? h.on_child_failure : null,
    failedBy: h.failed_by || null,
  };
}

/**
 * One job event (docs/protocol.md, "Events"): `completed` (data: the
 * result), `failed` (an attempt failed and the job runs again; data: the
 * error), `dead` (data: the error), `cancelled`, or `progress` (data: the
 * progress). `id` is the stream entry's: pass it as `lastId` to resume.
 */
export interface JobEvent {
  id: string;
  jobId: string;
  event: "completed" | "failed" | "dead" | "cancelled" | "progress";
  attempt: number;
  data: unknown;
  /** A result over 64 KiB is not carried (`data` is null): read the job. */
  big: boolean;
}

interface Waiter {
  onEvent(ev: JobEvent): void;
  quiet(): void;
}

/** How long the queue's events stay on after a `events()` iteration stops. */
const LISTENING_MS = 30_000;

function decodeEvents(reply: unknown): JobEvent[] {
  const out: JobEvent[] = [];
  for (const stream of (reply as [string, [string, string[]][]][] | null) ?? []) {
    for (const [id, flat] of stream[1] ?? []) {
      const f: Record<string, string> = {};
      for (let i = 0; i + 1 < flat.length; i += 2) {
        const k = flat[i];
        const v = flat[i + 1];
        if (k !== undefined && v !== undefined) f[k] = v;
      }
      out.push({
        id,
        jobId: f.job ?? "",
        event: (f.event ?? "") as JobEvent["event"],
        attempt: Number(f.attempt ?? 0) || 0,
        data: f.data === undefined ? null : jsonOrText(f.data),
        big: f.big === "1",
      });
    }
  }
  return out;
}

/** What an end event tells of a job already deleted (retention 0). */
function jobFromEvent(queue: string, ev: JobEvent): Job {
  const state: JobState = ev.event === "completed" ? "completed" : ev.event === "dead" ? "dead" : "cancelled";
  return {
    id: ev.jobId,
    queue,
    state,
    attempts: ev.attempt,
    maxAttempts: ev.attempt,
    priority: 0,
    payload: "",
    data: null,
    progress: null,
    result: ev.event === "completed" ? ev.data : null,
    lastError: ev.event === "dead" ? String(ev.data ?? "") : null,
    enqueuedAtMs: null,
    runAtMs: null,
    startedAtMs: null,
    finishedAtMs: null,
    cancelRequested: ev.event === "cancelled",
    dedupKey: null,
    timeoutMs: null,
    timeoutRetry: null,
    failures: [],
    parent: null,
    parentQueue: null,
    childCount: null,
    onChildFailure: null,
    failedBy: null,
  };
}
