import { ErrorCode, type JsonRpcRequest, type JsonRpcResponse } from "../domain/JsonRpc.js"

/**
 * What the gateway answers when a backend asks its client something (server→client request)
 * on a connection the gateway owns. `ping` is answered; requests that need a real client
 * (sampling, elicitation, roots) get an error at once, so the server's call does not hang.
 */
export const answerServerRequest = (request: JsonRpcRequest): JsonRpcResponse =>
  request.method === "ping"
    ? { jsonrpc: "2.0", id: request.id, result: {} }
    : {
      jsonrpc: "2.0",
      id: request.id,
      error: {
        code: ErrorCode.MethodNotFound,
        message: `${request.method} is not available: the gateway has no client to relay it to on this connection`
      }
    }
