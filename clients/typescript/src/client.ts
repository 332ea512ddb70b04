/**
 * A thin typed layer over the generated retouch.v1 stubs: one gRPC (HTTP/2)
 * transport with the API key and subject added to every call, the three service
 * clients, and `inpaint()` / `untilCompleted()` for the job event streams.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createClient,
  type CallOptions,
  type Client,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import {
  createGrpcTransport,
  Http2SessionManager,
  type Http2SessionOptions,
} from "@connectrpc/connect-node";

import { Account } from "./gen/retouch/v1/account_pb.js";
import {
  ImageEdit,
  type Completed,
  type InpaintRequestSchema,
  type JobEvent,
} from "./gen/retouch/v1/image_edit_pb.js";
import { Providers } from "./gen/retouch/v1/providers_pb.js";

/** Metadata that names the end user a calling service acts for. */
export const SUBJECT_HEADER = "x-retouch-subject";
/** Metadata that carries `Bearer <api key>`. */
export const AUTHORIZATION_HEADER = "authorization";

export interface RetouchClientOptions {
  /**
   * Where the server listens: `http://host:port` for plaintext HTTP/2 (h2c, what
   * `retouch-server` serves), `https://host:port` for TLS.
   */
  baseUrl: string;
  /** The tenant's API key, sent as `authorization: Bearer <apiKey>`. */
  apiKey: string;
  /**
   * The subject every call acts for, `user:<id>` or `guest:<id>`; unset means the
   * tenant acts for itself. A call may override it with its own
   * `headers: { "x-retouch-subject": ... }`.
   */
  subject?: string;
  /** A deadline for every call, in milliseconds; a call may pass its own `timeoutMs`. */
  defaultTimeoutMs?: number;
  /** More interceptors, run after the one that adds the credentials. */
  interceptors?: Interceptor[];
  /** HTTP/2 keepalive: ping interval, ping timeout, idle timeout. */
  http2?: Http2SessionOptions;
}

export interface RetouchClient {
  /** Inpaint, Outpaint, Enhance, Upload, jobs and results. */
  readonly imageEdit: Client<typeof ImageEdit>;
  /** The providers the server loaded: capabilities, cost and health. */
  readonly providers: Client<typeof Providers>;
  /** Usage, quotes, and (admin keys) plans and credits. */
  readonly account: Client<typeof Account>;
  /** The transport under the three clients, for other services of the same server. */
  readonly transport: Transport;
  /** Closes the HTTP/2 connection; calls still running fail. Idempotent. */
  close(): void;
}

/** An interceptor that adds the API key, and the subject when one is given. */
export function credentials(apiKey: string, subject?: string): Interceptor {
  if (apiKey.trim() === "") {
    throw new TypeError("retouch: apiKey is empty; pass the tenant's API key");
  }
  const authorization = `Bearer ${apiKey.trim()}`;
  return (next) => (request) => {
    if (!request.header.has(AUTHORIZATION_HEADER)) {
      request.header.set(AUTHORIZATION_HEADER, authorization);
    }
    if (subject !== undefined && !request.header.has(SUBJECT_HEADER)) {
      request.header.set(SUBJECT_HEADER, subject);
    }
    return next(request);
  };
}

/**
 * Clients for the retouch services over one HTTP/2 connection.
 *
 * ```ts
 * const retouch = createRetouchClient({ baseUrl: "http://127.0.0.1:50051", apiKey });
 * try { ... } finally { retouch.close(); }
 * ```
 */
export function createRetouchClient(options: RetouchClientOptions): RetouchClient {
  const sessionManager = new Http2SessionManager(options.baseUrl, options.http2);
  const transport = createGrpcTransport({
    baseUrl: options.baseUrl,
    sessionManager,
    interceptors: [credentials(options.apiKey, options.subject), ...(options.interceptors ?? [])],
    ...(options.defaultTimeoutMs === undefined ? {} : { defaultTimeoutMs: options.defaultTimeoutMs }),
  });
  return {
    imageEdit: createClient(ImageEdit, transport),
    providers: createClient(Providers, transport),
    account: createClient(Account, transport),
    transport,
    close: () => sessionManager.abort(),
  };
}

/** Call options for a job stream, plus a callback for each event as it arrives. */
export interface JobStreamOptions extends CallOptions {
  /** Called with every event, `accepted` and `progress` included, in order. */
  onEvent?: (event: JobEvent) => void;
}

/**
 * Reads a job's event stream (Inpaint, Outpaint, Enhance or WatchJob) to its end
 * and returns the `completed` event. A failed job rejects with the server's
 * `ConnectError` (its `code` and `details` as sent); a stream that ends without a
 * `completed` event rejects with `Code.Internal`.
 */
export async function untilCompleted(
  events: AsyncIterable<JobEvent>,
  onEvent?: (event: JobEvent) => void,
): Promise<Completed> {
  let completed: Completed | undefined;
  let jobId = "";
  for await (const event of events) {
    jobId = event.jobId;
    onEvent?.(event);
    if (event.event.case === "completed") {
      completed = event.event.value;
    }
  }
  if (completed === undefined) {
    throw new ConnectError(
      `the event stream of job ${jobId || "(none)"} ended without a completed event`,
      Code.Internal,
    );
  }
  return completed;
}

/**
 * Runs an inpaint and returns its `completed` event. Aborting `options.signal`
 * (or passing `timeoutMs`) cancels the job, and its charge is refunded.
 */
export async function inpaint(
  client: Pick<RetouchClient, "imageEdit">,
  request: MessageInitShape<typeof InpaintRequestSchema>,
  options: JobStreamOptions = {},
): Promise<Completed> {
  const { onEvent, ...call } = options;
  return untilCompleted(client.imageEdit.inpaint(request, call), onEvent);
}
