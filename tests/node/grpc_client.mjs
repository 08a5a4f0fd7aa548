// Node gRPC client test: @grpc/grpc-js + @grpc/proto-loader against modelyard.v1.Inference.
//
// Env: MODELYARD_GRPC_TARGET (host:port), MODELYARD_API_KEY, MODELYARD_MODEL (a demo-provider
// alias), optional MODELYARD_PROTO_DIR (defaults to the repo's proto/ folder).
// Prints one JSON line of results; exits non-zero on any failed assertion.

import assert from "node:assert/strict";
import path from "node:path";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const target = required("MODELYARD_GRPC_TARGET");
const apiKey = required("MODELYARD_API_KEY");
const model = required("MODELYARD_MODEL");
const protoDir = process.env.MODELYARD_PROTO_DIR || path.resolve(here, "..", "..", "proto");
const DEADLINE_MS = 15_000;

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`environment variable ${name} is required`);
  return value;
}

// google/protobuf/struct.proto (imported by chat.proto) is not in proto/: protobufjs, which
// proto-loader uses, bundles the well-known types, so only the repo's proto dir is needed.
const packageDefinition = protoLoader.loadSync("modelyard/v1/inference.proto", {
  includeDirs: [protoDir],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { modelyard } = grpc.loadPackageDefinition(packageDefinition);
// The target is loopback: never route it through an http_proxy/grpc_proxy from the environment.
const client = new modelyard.v1.Inference(target, grpc.credentials.createInsecure(), {
  "grpc.enable_http_proxy": 0,
});

// Minimal google.rpc.Status / ErrorInfo, to decode the `grpc-status-details-bin` trailer
// (`Any` is declared inline: same wire format as google.protobuf.Any).
const rpcRoot = protobuf.parse(`
  syntax = "proto3";
  package google.rpc;
  message Any { string type_url = 1; bytes value = 2; }
  message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
  message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
`, { keepCase: true }).root;
const Status = rpcRoot.lookupType("google.rpc.Status");
const ErrorInfo = rpcRoot.lookupType("google.rpc.ErrorInfo");

function authMetadata(key = apiKey) {
  const metadata = new grpc.Metadata();
  if (key !== null) metadata.set("authorization", `Bearer ${key}`);
  return metadata;
}

function options() {
  return { deadline: new Date(Date.now() + DEADLINE_MS) };
}

function unary(method, request, metadata = authMetadata()) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, options(), (error, response) => {
      if (error) reject(error);
      else resolve(response);
    });
  });
}

async function collect(method, request, metadata = authMetadata()) {
  const chunks = [];
  for await (const chunk of client[method](request, metadata, options())) chunks.push(chunk);
  return chunks;
}

function errorInfo(error) {
  const [raw] = error.metadata?.get("grpc-status-details-bin") ?? [];
  if (!raw) return null;
  const status = Status.decode(raw);
  assert.equal(status.code, error.code, "google.rpc.Status code matches the gRPC status");
  const detail = status.details.find((any) => any.type_url.endsWith("/google.rpc.ErrorInfo"));
  if (!detail) return null;
  const info = ErrorInfo.toObject(ErrorInfo.decode(detail.value));
  return { reason: info.reason, domain: info.domain, metadata: { ...info.metadata } };
}

async function expectStatus(promise, code, reason) {
  let caught = null;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  assert.ok(caught, `expected gRPC status ${code}, but the call succeeded`);
  assert.equal(caught.code, code, `expected gRPC status ${code}, got ${caught.code}: ${caught.details}`);
  const info = errorInfo(caught);
  assert.ok(info, "error carries a google.rpc.ErrorInfo detail");
  assert.equal(info.reason, reason);
  assert.equal(info.domain, "modelyard.dev");
  return { code: caught.code, details: caught.details, reason: info.reason, type: info.metadata.type };
}

function words(text) {
  return text.split(/\s+/).filter(Boolean).length;
}

async function main() {
  const userText = "hello from node";
  const systemText = "You are a terse assistant.";
  const expectedText = `You said: ${userText}`;
  const expectedUsage = {
    prompt_tokens: words(systemText) + words(userText),
    completion_tokens: words(expectedText),
  };
  expectedUsage.total_tokens = expectedUsage.prompt_tokens + expectedUsage.completion_tokens;
  const request = {
    model,
    messages: [
      { role: "ROLE_SYSTEM", content: systemText },
      { role: "ROLE_USER", content: userText },
    ],
  };

  // Unary.
  const completion = await unary("CreateChatCompletion", request);
  assert.ok(completion.id, "completion has an id");
  assert.equal(completion.choices.length, 1);
  const [choice] = completion.choices;
  assert.equal(choice.index, 0);
  assert.equal(choice.message.role, "ROLE_ASSISTANT");
  assert.equal(choice.message.content, expectedText);
  assert.equal(choice.finish_reason, "FINISH_REASON_STOP");
  assert.ok(completion.usage, "unary reply carries usage");
  assert.equal(completion.usage.prompt_tokens, expectedUsage.prompt_tokens);
  assert.equal(completion.usage.completion_tokens, expectedUsage.completion_tokens);
  assert.equal(completion.usage.total_tokens, expectedUsage.total_tokens);

  // Server streaming, with usage in a final chunk.
  const chunks = await collect("StreamChatCompletion", {
    ...request,
    stream_options: { include_usage: true },
  });
  assert.ok(chunks.length >= 3, `expected several chunks, got ${chunks.length}`);
  const ids = new Set(chunks.map((chunk) => chunk.id));
  assert.equal(ids.size, 1, "all chunks share one id");
  const last = chunks.at(-1);
  const contentChunks = chunks.slice(0, -1);
  assert.equal(last.choices.length, 0, "the usage chunk has no choices");
  assert.ok(last.usage, "the final chunk carries usage");
  for (const chunk of contentChunks) assert.equal(chunk.usage, null, "only the final chunk carries usage");
  assert.equal(contentChunks[0].choices[0].delta.role, "ROLE_ASSISTANT");
  const deltas = contentChunks.flatMap((chunk) => chunk.choices.map((c) => c.delta.content ?? ""));
  const streamedText = deltas.join("");
  assert.equal(streamedText, completion.choices[0].message.content, "deltas concatenate to the unary text");
  const finishReasons = contentChunks
    .flatMap((chunk) => chunk.choices.map((c) => c.finish_reason))
    .filter((reason) => reason !== "FINISH_REASON_UNSPECIFIED");
  assert.deepEqual(finishReasons, ["FINISH_REASON_STOP"], "exactly one finish reason, STOP, at the end");
  assert.equal(contentChunks.at(-1).choices[0].finish_reason, "FINISH_REASON_STOP");
  assert.equal(last.usage.prompt_tokens, expectedUsage.prompt_tokens);
  assert.equal(last.usage.completion_tokens, expectedUsage.completion_tokens);
  assert.equal(last.usage.total_tokens, expectedUsage.total_tokens);

  // Streaming without include_usage: no chunk carries usage.
  const plainChunks = await collect("StreamChatCompletion", request);
  assert.ok(plainChunks.every((chunk) => chunk.usage === null), "no usage without include_usage");
  assert.equal(
    plainChunks.flatMap((chunk) => chunk.choices.map((c) => c.delta.content ?? "")).join(""),
    expectedText,
  );

  // Errors.
  const unknown = { ...request, model: "no-such/model-from-node" };
  const errors = {
    unknown_model_unary: await expectStatus(
      unary("CreateChatCompletion", unknown), grpc.status.NOT_FOUND, "MODEL_NOT_FOUND"),
    unknown_model_stream: await expectStatus(
      collect("StreamChatCompletion", unknown), grpc.status.NOT_FOUND, "MODEL_NOT_FOUND"),
    missing_key_unary: await expectStatus(
      unary("CreateChatCompletion", request, authMetadata(null)), grpc.status.UNAUTHENTICATED, "INVALID_API_KEY"),
    missing_key_stream: await expectStatus(
      collect("StreamChatCompletion", request, authMetadata(null)), grpc.status.UNAUTHENTICATED, "INVALID_API_KEY"),
    wrong_key_unary: await expectStatus(
      unary("CreateChatCompletion", request, authMetadata("my-wrong-key")), grpc.status.UNAUTHENTICATED,
      "INVALID_API_KEY"),
  };
  assert.equal(grpc.status.NOT_FOUND, 5);
  assert.equal(grpc.status.UNAUTHENTICATED, 16);

  return {
    ok: true,
    node: process.version,
    unary: {
      text: choice.message.content,
      finish_reason: choice.finish_reason,
      usage: {
        prompt_tokens: completion.usage.prompt_tokens,
        completion_tokens: completion.usage.completion_tokens,
        total_tokens: completion.usage.total_tokens,
      },
    },
    stream: {
      text: streamedText,
      chunks: chunks.length,
      deltas,
      finish_reason: finishReasons[0],
      usage: {
        prompt_tokens: last.usage.prompt_tokens,
        completion_tokens: last.usage.completion_tokens,
        total_tokens: last.usage.total_tokens,
      },
    },
    errors,
  };
}

try {
  const result = await main();
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exitCode = 0;
} catch (error) {
  process.stderr.write(`grpc_client.mjs failed: ${error?.stack ?? error}\n`);
  if (error?.actual !== undefined || error?.expected !== undefined) {
    process.stderr.write(`actual: ${JSON.stringify(error.actual)}\nexpected: ${JSON.stringify(error.expected)}\n`);
  }
  process.exitCode = 1;
} finally {
  client.close();
}
