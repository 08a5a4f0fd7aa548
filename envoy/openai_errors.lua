-- Turns a worker's error into OpenAI's HTTP error: the worker sends the exact HTTP status and the
-- OpenAI error envelope as gRPC metadata, which the transcoder exposes as response headers.
-- Envoy's own replies (unknown path, oversized body, worker down) are shaped by local_reply_config.
function envoy_on_response(handle)
  local headers = handle:headers()
  local envelope = headers:get("x-modelyard-error")
  if envelope == nil then
    return
  end
  local status = headers:get("x-modelyard-status")
  headers:remove("x-modelyard-error")
  headers:remove("x-modelyard-status")
  headers:remove("grpc-status-details-bin")
  if status ~= nil then
    headers:replace(":status", status)
  end
  headers:replace("content-type", "application/json")
  handle:body(true):setBytes(envelope)
end
