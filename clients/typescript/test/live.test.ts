/**
 * The TypeScript client against a live `modelbank serve` that this test starts (a migrated
 * SQLite database in a temporary folder, an admin key from `modelbank keys create`): a
 * charge to the µcr, a wallet read, 402 on an empty wallet, an idempotent replay.
 * MODELBANK_BIN names the CLI (default: the repository's .venv/bin/modelbank).
 */
import assert from "node:assert/strict";
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import {
  ModelbankError,
  createModelbankClient,
  idempotent,
  unwrap,
  type ModelbankClient,
} from "../src/index.js";

const here = fileURLToPath(new URL(".", import.meta.url));
const BIN =
  process.env.MODELBANK_BIN ?? resolve(here, "..", "..", "..", "..", ".venv", "bin", "modelbank");
const PRICE = { input_ucr_per_mtok: 1_000_000, output_ucr_per_mtok: 2_000_000 };

let server: ChildProcess | undefined;
let folder = "";
let admin: ModelbankClient;

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const probe = createServer();
    probe.once("error", fail);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      const port = typeof address === "object" && address ? address.port : 0;
      probe.close(() => done(port));
    });
  });
}

async function waitForHealth(url: string, seconds: number): Promise<void> {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    try {
      if ((await fetch(`${url}/healthz`)).ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`modelbank serve did not answer at ${url}`);
    if (server?.exitCode !== null) throw new Error(`modelbank serve exited (${server?.exitCode})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

before(async () => {
  folder = mkdtempSync(join(tmpdir(), "modelbank-ts-"));
  const db = `sqlite:///${join(folder, "modelbank.db")}`;
  const env = { ...process.env, MODELBANK_SECRET_KEY_FILE: join(folder, "secret.key") };
  execFileSync(BIN, ["migrate", "--db", db], { env, stdio: "ignore" });
  const created = execFileSync(BIN, ["keys", "create", "--role", "admin", "--db", db], { env });
  const adminKey = created.toString().trim().split("\n").at(-1) ?? "";
  assert.match(adminKey, /^mb_/);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  server = spawn(BIN, ["serve", "--port", String(port), "--db", db, "--log-level", "warning"], {
    env,
    stdio: ["ignore", "inherit", "inherit"],
  });
  await waitForHealth(url, 60);
  admin = createModelbankClient({ baseUrl: url, apiKey: adminKey });
});

after(() => {
  server?.kill("SIGTERM");
  rmSync(folder, { recursive: true, force: true });
});

async function newUser(name: string): Promise<number> {
  const user = unwrap(await admin.POST("/api/v1/users", { body: { external_id: name } }));
  return user.id;
}

async function newModel(slug: string): Promise<number> {
  const body = { slug, name: slug, price: PRICE };
  return unwrap(await admin.POST("/api/v1/models", { body })).id;
}

test("a charge costs the model's price to the µcr and the wallet shows it", async () => {
  const user = await newUser("ts-alice");
  await newModel("ts-chat");
  unwrap(
    await admin.POST("/api/v1/users/{user_id}/grants", {
      params: { path: { user_id: user }, ...idempotent() },
      body: { amount_ucr: 10_000 },
    }),
  );
  // only user_id and a model reference are required: every defaulted field may be left out
  const charged = unwrap(
    await admin.POST("/api/v1/usage", {
      params: idempotent(),
      body: { user_id: user, model: "ts-chat", input_tokens: 1_000, output_tokens: 500 },
    }),
  );
  assert.equal(charged.charge_ucr, 1_000 * 1 + 500 * 2);
  assert.equal(charged.balance_ucr, 8_000);
  const wallet = unwrap(
    await admin.GET("/api/v1/users/{user_id}/wallet", { params: { path: { user_id: user } } }),
  );
  assert.deepEqual(
    [wallet.balance_ucr, wallet.available_ucr, wallet.balance],
    [8_000, 8_000, "0.008000 cr"],
  );
});

test("an empty wallet answers 402 insufficient_funds and nothing is charged", async () => {
  const user = await newUser("ts-empty");
  await newModel("ts-empty-model");
  const result = await admin.POST("/api/v1/usage", {
    params: idempotent(),
    body: { user_id: user, model: "ts-empty-model", input_tokens: 10 },
  });
  assert.equal(result.response.status, 402);
  assert.equal(result.response.headers.get("content-type"), "application/problem+json");
  assert.throws(
    () => unwrap(result),
    (error: unknown) =>
      error instanceof ModelbankError &&
      error.status === 402 &&
      error.code === "insufficient_funds" &&
      error.type === "urn:modelbank:problem:insufficient_funds",
  );
  const wallet = unwrap(
    await admin.GET("/api/v1/users/{user_id}/wallet", { params: { path: { user_id: user } } }),
  );
  assert.equal(wallet.balance_ucr, 0);
});

test("a retry with the same idempotency key replays the first charge", async () => {
  const user = await newUser("ts-replay");
  await newModel("ts-replay-model");
  unwrap(
    await admin.POST("/api/v1/users/{user_id}/grants", {
      params: { path: { user_id: user }, ...idempotent() },
      body: { amount_ucr: 1_000 },
    }),
  );
  const key = idempotent("ts-request-1");
  const body = { user_id: user, model: "ts-replay-model", input_tokens: 100 };
  const first = await admin.POST("/api/v1/usage", { params: key, body });
  const again = await admin.POST("/api/v1/usage", { params: key, body });
  assert.equal(first.response.headers.get("idempotency-hit"), "false");
  assert.equal(again.response.headers.get("idempotency-hit"), "true");
  assert.deepEqual(unwrap(again), unwrap(first));
  assert.equal(unwrap(first).balance_ucr, 900);
  const wallet = unwrap(
    await admin.GET("/api/v1/users/{user_id}/wallet", { params: { path: { user_id: user } } }),
  );
  assert.equal(wallet.balance_ucr, 900); // charged once
  const reused = await admin.POST("/api/v1/usage", {
    params: key,
    body: { ...body, input_tokens: 101 },
  });
  assert.equal(reused.response.status, 409);
});
