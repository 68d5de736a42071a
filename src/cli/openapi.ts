import * as OpenApi from "@effect/platform/OpenApi"
import { Command } from "@effect/cli"
import { Console } from "effect"
import { GatewayApi } from "../http/Api.js"

/** `openapi`: the REST face's OpenAPI document, as `/openapi.json` serves it, without a running gateway. */
export const openapiCommand = Command.make("openapi", {}, () => Console.log(JSON.stringify(OpenApi.fromApi(GatewayApi), null, 2))).pipe(
  Command.withDescription("Print the OpenAPI document of the REST API (the one /openapi.json serves)")
)
