// Restate's side of scripts/bench-peers.sh: registers the service
// (restate_service.mts, already listening) with a running restate-server,
// then W1, W2, W2 fan-out and W3 through its HTTP ingress, each call waiting
// for the handler's result (start -> completion seen by the client), and the
// CPU time the server and the service's process spent per W1 step.
//
// Prints one line: `PEERS_JSON {...}` with the same keys as
// `cargo bench --bench api -- --peers-json`.
//
// node --experimental-strip-types restate_client.mts --ingress URL --admin URL
//   --service URL [--server-pid PID --service-pid PID]
//   [--w1-steps N --w2-count N --w3-runs N --repeats N]

import { readFileSync } from "node:fs";

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const ingress = flag("--ingress", "http://127.0.0.1:8080");
const admin = flag("--admin", "http://127.0.0.1:9070");
const service = flag("--service", "http://127.0.0.1:9080");
const w1Steps = Number(flag("--w1-steps", "500"));
const w2Count = Number(flag("--w2-count", "1000"));
const w3Runs = Number(flag("--w3-runs", "200"));
const repeats = Number(flag("--repeats", "3"));
const durability = flag("--durability", "");
const serverPid = flag("--server-pid", "");
const servicePid = flag("--service-pid", "");

// User + system CPU seconds of process `pid` so far (/proc/PID/stat, in
// clock ticks of 100 a second), or null without a pid.
function cpuSeconds(pid: string): number | null {
  if (!pid) return null;
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}
function perStepMs(before: number | null, after: number | null, steps: number): number | null {
  return before === null || after === null ? null : ((after - before) * 1e3) / steps;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.round((sorted.length - 1) * p)];
}

async function call(handler: string, n: number): Promise<number> {
  const t = performance.now();
  const response = await fetch(`${ingress}/bench/${handler}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(n),
  });
  const body = await response.text();
  if (!response.ok || JSON.parse(body) !== n) {
    throw new Error(`bench/${handler}(${n}): ${response.status} ${body}`);
  }
  return (performance.now() - t) / 1e3;
}

const many = (n: number) => call("many", n);

async function fanOut(count: number): Promise<number> {
  const t = performance.now();
  await Promise.all(Array.from({ length: count }, () => many(1)));
  return (performance.now() - t) / 1e3;
}

// Registers the service; the server may still be starting: tries for 60 s.
async function register(): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    let failure: string;
    try {
      const response = await fetch(`${admin}/deployments`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ uri: service }),
      });
      if (response.ok) return;
      failure = `${response.status} ${await response.text()}`;
    } catch (e) {
      failure = String(e);
    }
    if (Date.now() > deadline) throw new Error(`registering ${service}: ${failure}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

await register();
for (let i = 0; i < 5; i++) await many(3);
const w1Start = Date.now() / 1e3;
const [serverBefore, serviceBefore] = [cpuSeconds(serverPid), cpuSeconds(servicePid)];
const w1: number[] = [];
for (let i = 0; i < repeats; i++) w1.push(await many(w1Steps));
const [serverAfter, serviceAfter] = [cpuSeconds(serverPid), cpuSeconds(servicePid)];
const w1Window = [w1Start, Date.now() / 1e3];
const w2: number[] = [];
for (let i = 0; i < repeats; i++) w2.push(await fanOut(w2Count));
const w2f: number[] = [];
for (let i = 0; i < repeats; i++) w2f.push(await call("fan", w2Count));
const w3: number[] = [];
for (let i = 0; i < w3Runs; i++) w3.push((await many(3)) * 1e3);
const line = {
  system: "restate",
  durability,
  w1_steps: w1Steps,
  w1_s: percentile(w1, 0.5),
  w1_runs: repeats,
  w1_window: w1Window,
  w1_server_cpu_ms: perStepMs(serverBefore, serverAfter, w1Steps * repeats),
  w1_sdk_cpu_ms: perStepMs(serviceBefore, serviceAfter, w1Steps * repeats),
  w2_count: w2Count,
  w2_s: percentile(w2, 0.5),
  w2f_s: percentile(w2f, 0.5),
  w3_runs: w3Runs,
  w3_p50_ms: percentile(w3, 0.5),
  w3_p99_ms: percentile(w3, 0.99),
};
console.log("PEERS_JSON " + JSON.stringify(line));
