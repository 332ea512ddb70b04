/** `python -m retouch.server` as a child process on a free loopback port. */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** The repository root, from dist/test/server.js. */
const ROOT = fileURLToPath(new URL("../../../../", import.meta.url));

export interface RunningServer {
  /** `http://127.0.0.1:<port>` */
  readonly baseUrl: string;
  readonly port: number;
  /** SIGTERM, then the exit code (SIGKILL after `graceMs`). Removes the data dir. */
  stop(graceMs?: number): Promise<number | null>;
}

/**
 * Starts the server with its data under a fresh temporary directory. The Python is
 * `$RETOUCH_PYTHON`, else the repository's `.venv/bin/python`.
 */
export async function startServer(startTimeoutMs = 30_000): Promise<RunningServer> {
  const dataDir = await mkdtemp(join(tmpdir(), "retouch-ts-"));
  const python = process.env["RETOUCH_PYTHON"] ?? join(ROOT, ".venv", "bin", "python");
  const child = spawn(python, ["-m", "retouch.server"], {
    cwd: ROOT,
    env: { ...process.env, RETOUCH_DATA_DIR: dataDir, RETOUCH_LISTEN: "127.0.0.1:0" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const exited = new Promise<number | null>((resolve) => {
    child.once("exit", (code) => resolve(code));
  });
  try {
    const port = await listeningPort(child, exited, startTimeoutMs);
    return {
      baseUrl: `http://127.0.0.1:${port}`,
      port,
      async stop(graceMs = 20_000) {
        try {
          return await stopProcess(child, exited, graceMs);
        } finally {
          await rm(dataDir, { recursive: true, force: true });
        }
      },
    };
  } catch (error) {
    child.kill("SIGKILL");
    await exited;
    await rm(dataDir, { recursive: true, force: true });
    throw error;
  }
}

/** Reads stderr until the "listening on" line; keeps draining it afterwards. */
function listeningPort(
  child: ChildProcess,
  exited: Promise<number | null>,
  timeoutMs: number,
): Promise<number> {
  const stderr = child.stderr;
  if (stderr === null) {
    return Promise.reject(new Error("the server's stderr is not piped"));
  }
  const log: string[] = [];
  return new Promise<number>((resolve, reject) => {
    const lines = createInterface({ input: stderr });
    const timer = setTimeout(() => {
      reject(new Error(`the server did not listen within ${timeoutMs} ms:\n${log.join("\n")}`));
    }, timeoutMs);
    lines.on("line", (line) => {
      if (log.length < 200) log.push(line);
      const found = /listening on 127\.0\.0\.1:(\d+)/.exec(line);
      if (found?.[1] !== undefined) {
        clearTimeout(timer);
        resolve(Number(found[1]));
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the server exited with ${code} before listening:\n${log.join("\n")}`));
    });
    child.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

async function stopProcess(
  child: ChildProcess,
  exited: Promise<number | null>,
  graceMs: number,
): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  child.kill("SIGTERM");
  let timer: NodeJS.Timeout | undefined;
  const killed = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), graceMs);
  });
  const outcome = await Promise.race([exited, killed]);
  clearTimeout(timer);
  if (outcome === "timeout") {
    child.kill("SIGKILL");
    await exited;
    throw new Error(`the server did not stop within ${graceMs} ms of SIGTERM`);
  }
  return outcome;
}
