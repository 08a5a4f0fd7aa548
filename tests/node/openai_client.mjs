// Official `openai` Node SDK against the gateway's OpenAI-compatible REST API (through Envoy).
//
// Env: MODELYARD_BASE_URL (http://host:port/v1), MODELYARD_API_KEY, MODELYARD_MODEL (a
// demo-provider alias). Prints one JSON line of results; exits non-zero on any failed assertion.

import assert from "node:assert/strict";

import OpenAI from "openai";
import { VERSION as SDK_VERSION } from "openai/version";

const baseURL = required("MODELYARD_BASE_URL");
const apiKey = required("MODELYARD_API_KEY");
const model = required("MODELYARD_MODEL");

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`environment variable ${name} is required`);
  return value;
}

function newClient(key) {
  return new OpenAI({ baseURL, apiKey: key, maxRetries: 0, timeout: 15_000 });
}

const client = newClient(apiKey);

function words(text) {
  return text.split(/\s+/).filter(Boolean).length;
}

function pickUsage(usage) {
  return {
    prompt_tokens: usage.prompt_tokens,
    completion_tokens: usage.completion_tokens,
    total_tokens: usage.total_tokens,
  };
}

async function expectError(promise, ErrorClass, status, code) {
  let caught = null;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  assert.ok(caught, `expected ${ErrorClass.name}, but the call succeeded`);
  assert.ok(
    caught instanceof ErrorClass,
    `expected ${ErrorClass.name}, got ${caught?.constructor?.name}: ${caught?.message}`,
  );
  assert.ok(caught instanceof OpenAI.APIError);
  assert.equal(caught.status, status);
  assert.equal(caught.code, code);
  assert.equal(caught.type, "invalid_request_error");
  return { class: caught.constructor.name, status: caught.status, code: caught.code, type: caught.type,
           param: caught.param ?? null, message: caught.error?.message ?? caught.message };
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
  const messages = [
    { role: "system", content: systemText },
    { role: "user", content: userText },
  ];

  // Plain chat completion.
  const completion = await client.chat.completions.create({ model, messages });
  assert.equal(completion.object, "chat.completion");
  assert.ok(completion.id, "completion has an id");
  assert.equal(completion.choices.length, 1);
  const [choice] = completion.choices;
  assert.equal(choice.message.role, "assistant");
  assert.equal(choice.message.content, expectedText);
  assert.equal(choice.finish_reason, "stop");
  assert.deepEqual(pickUsage(completion.usage), expectedUsage);

  // Streaming chat with usage: usage only in the final chunk, which has no choices.
  const stream = await client.chat.completions.create({
    model,
    messages,
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.ok(chunks.length >= 3, `expected several chunks, got ${chunks.length}`);
  for (const chunk of chunks) assert.equal(chunk.object, "chat.completion.chunk");
  assert.equal(new Set(chunks.map((chunk) => chunk.id)).size, 1, "all chunks share one id");
  const last = chunks.at(-1);
  const contentChunks = chunks.slice(0, -1);
  assert.deepEqual(last.choices, [], "the usage chunk has no choices");
  assert.ok(last.usage, "the final chunk carries usage");
  assert.deepEqual(pickUsage(last.usage), expectedUsage);
  for (const chunk of contentChunks) {
    assert.equal(chunk.usage ?? null, null, "only the final chunk carries usage");
    assert.equal(chunk.choices.length, 1);
  }
  assert.equal(contentChunks[0].choices[0].delta.role, "assistant");
  const deltas = contentChunks.map((chunk) => chunk.choices[0].delta.content ?? "");
  const streamedText = deltas.join("");
  assert.equal(streamedText, expectedText, "deltas concatenate to the non-streamed text");
  const finishReasons = contentChunks.map((chunk) => chunk.choices[0].finish_reason).filter((r) => r != null);
  assert.deepEqual(finishReasons, ["stop"], "exactly one finish reason, on the last content chunk");
  assert.equal(contentChunks.at(-1).choices[0].finish_reason, "stop");

  // Errors.
  const errors = {
    unknown_model: await expectError(
      client.chat.completions.create({ model: "no-such/model-from-node", messages }),
      OpenAI.NotFoundError, 404, "model_not_found"),
    unknown_model_stream: await expectError(
      client.chat.completions.create({ model: "no-such/model-from-node", messages, stream: true }),
      OpenAI.NotFoundError, 404, "model_not_found"),
    wrong_key: await expectError(
      newClient("my-wrong-key-from-node").chat.completions.create({ model, messages }),
      OpenAI.AuthenticationError, 401, "invalid_api_key"),
    wrong_key_stream: await expectError(
      newClient("my-wrong-key-from-node").chat.completions.create({ model, messages, stream: true }),
      OpenAI.AuthenticationError, 401, "invalid_api_key"),
  };
  assert.equal(errors.unknown_model.param, "model");

  return {
    ok: true,
    node: process.version,
    sdk_version: SDK_VERSION,
    chat: { text: choice.message.content, finish_reason: choice.finish_reason, usage: pickUsage(completion.usage) },
    stream: {
      text: streamedText,
      chunks: chunks.length,
      deltas,
      finish_reason: finishReasons[0],
      usage: pickUsage(last.usage),
      usage_chunks: chunks.filter((chunk) => chunk.usage != null).length,
    },
    errors,
  };
}

try {
  const result = await main();
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exitCode = 0;
} catch (error) {
  process.stderr.write(`openai_client.mjs failed: ${error?.stack ?? error}\n`);
  if (error?.actual !== undefined || error?.expected !== undefined) {
    process.stderr.write(`actual: ${JSON.stringify(error.actual)}\nexpected: ${JSON.stringify(error.expected)}\n`);
  }
  process.exitCode = 1;
}
