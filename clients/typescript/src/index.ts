export {
  AUTHORIZATION_HEADER,
  SUBJECT_HEADER,
  createRetouchClient,
  credentials,
  inpaint,
  untilCompleted,
  type JobStreamOptions,
  type RetouchClient,
  type RetouchClientOptions,
} from "./client.js";
export { Code, ConnectError } from "@connectrpc/connect";
export * from "./gen/retouch/v1/account_pb.js";
export * from "./gen/retouch/v1/common_pb.js";
export * from "./gen/retouch/v1/image_edit_pb.js";
export * from "./gen/retouch/v1/providers_pb.js";
