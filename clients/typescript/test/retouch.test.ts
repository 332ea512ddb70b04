/**
 * The TypeScript client against the real server: `python -m retouch.server` on a
 * free loopback port, with the built-in opencv provider.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";

import {
  Code,
  ConnectError,
  ImageFormat,
  Operation,
  createRetouchClient,
  inpaint,
  type JobEvent,
  type RetouchClient,
} from "../src/index.js";
import { PNG_SIGNATURE, encodePng, pngSize, squareMask, testCard } from "./png.js";
import { startServer, type RunningServer } from "./server.js";

const DEV_KEY = "retouch-dev-key";
const SIZE = 128;
const SUBJECT = "user:ts-client";

function codeOf(error: unknown): Code {
  return ConnectError.from(error).code;
}

describe("@retouch/client against retouch-server", { timeout: 90_000 }, () => {
  let server: RunningServer;
  let retouch: RetouchClient;
  const photo = encodePng(SIZE, SIZE, 3, testCard(SIZE));
  const mask = encodePng(SIZE, SIZE, 1, squareMask(SIZE, 40, 40, 88, 88));

  before(async () => {
    server = await startServer();
    retouch = createRetouchClient({
      baseUrl: server.baseUrl,
      apiKey: DEV_KEY,
      subject: SUBJECT,
      defaultTimeoutMs: 30_000,
    });
  });

  after(async () => {
    retouch?.close();
    if (server !== undefined) {
      assert.equal(await server.stop(), 0, "the server exits cleanly on SIGTERM");
    }
  });

  it("lists the built-in opencv provider", async () => {
    const { providers } = await retouch.providers.listProviders({
      operation: Operation.INPAINT,
    });
    const opencv = providers.find((provider) => provider.name === "opencv");
    assert.ok(opencv, `opencv missing from ${providers.map((p) => p.name).join(", ")}`);
    assert.ok(opencv.operations.includes(Operation.INPAINT));
    assert.ok(opencv.supportsMask);
  });

  it("inpaints a PNG and streams accepted, progress and completed", async () => {
    const events: JobEvent[] = [];
    const completed = await inpaint(
      retouch,
      {
        requestId: `ts-${randomUUID()}`,
        image: { source: { case: "data", value: photo } },
        mask: { source: { case: "data", value: mask } },
        output: { format: ImageFormat.PNG, inline: true },
        provider: { provider: "opencv", model: "telea" },
      },
      { onEvent: (event) => events.push(event) },
    );

    const cases = events.map((event) => event.event.case);
    assert.equal(cases[0], "accepted");
    assert.equal(cases.at(-1), "completed");
    assert.ok(cases.length >= 3, `expected progress events, got ${cases.join(", ")}`);
    assert.deepEqual(
      cases.slice(1, -1),
      cases.slice(1, -1).map(() => "progress"),
      `only progress between accepted and completed: ${cases.join(", ")}`,
    );
    const jobId = events[0]?.jobId ?? "";
    assert.ok(jobId !== "");
    events.forEach((event, index) => {
      assert.equal(event.jobId, jobId, "every event belongs to the one job");
      assert.equal(event.seq, BigInt(index + 1), "seq counts from 1 without gaps");
    });

    const accepted = events[0]?.event;
    assert.ok(accepted?.case === "accepted");
    assert.equal(accepted.value.provider, "opencv");
    assert.equal(accepted.value.model, "telea");
    assert.equal(accepted.value.inputWidth, SIZE);
    assert.equal(accepted.value.inputHeight, SIZE);

    const fractions = events.flatMap((event) =>
      event.event.case === "progress" ? [event.event.value.fraction] : [],
    );
    fractions.forEach((fraction, index) => {
      assert.ok(fraction >= 0 && fraction <= 1, `fraction ${fraction} in 0..1`);
      assert.ok(index === 0 || fraction >= (fractions[index - 1] ?? 0), "fractions never decrease");
    });

    assert.ok(completed.resultId !== "");
    assert.equal(completed.image?.width, SIZE);
    assert.equal(completed.image?.height, SIZE);
    assert.equal(completed.image?.format, ImageFormat.PNG);
    assert.equal(completed.image?.contentType, "image/png");
    assert.equal(completed.seed, accepted.value.seed, "the seed used is the one announced");
    assert.ok(Buffer.from(completed.data.subarray(0, 8)).equals(PNG_SIGNATURE));
    assert.deepEqual(pngSize(completed.data), { width: SIZE, height: SIZE });

    // The stored result is the inline one, and its owner can download it.
    const chunks: Uint8Array[] = [];
    for await (const chunk of retouch.imageEdit.downloadResult({ resultId: completed.resultId })) {
      chunks.push(chunk.data);
    }
    assert.ok(Buffer.concat(chunks).equals(completed.data));
  });

  it("rejects an image that is not one with INVALID_ARGUMENT", async () => {
    await assert.rejects(
      inpaint(retouch, {
        requestId: `ts-${randomUUID()}`,
        image: { source: { case: "data", value: new TextEncoder().encode("not an image") } },
        mask: { source: { case: "data", value: mask } },
      }),
      (error: unknown) => {
        assert.ok(error instanceof ConnectError, `expected a ConnectError, got ${String(error)}`);
        assert.equal(error.code, Code.InvalidArgument, error.message);
        assert.ok(error.rawMessage.length > 0, "the status says what was wrong");
        // google.rpc.BadRequest rides along in grpc-status-details-bin.
        const types = error.details.map((detail) => ("type" in detail ? detail.type : ""));
        assert.ok(types.includes("google.rpc.BadRequest"), `details: ${types.join(", ")}`);
        return true;
      },
    );
  });

  it("refuses a wrong API key with UNAUTHENTICATED", async () => {
    const stranger = createRetouchClient({ baseUrl: server.baseUrl, apiKey: "not-a-key" });
    try {
      await assert.rejects(stranger.providers.listProviders({}), (error: unknown) => {
        assert.equal(codeOf(error), Code.Unauthenticated);
        return true;
      });
    } finally {
      stranger.close();
    }
  });

  it("acts for the configured subject", async () => {
    const usage = await retouch.account.getUsage({});
    assert.equal(usage.subject, SUBJECT);
    assert.ok(usage.quotaUsed >= 1n, "the inpaint above counts against the subject's quota");
  });
});
