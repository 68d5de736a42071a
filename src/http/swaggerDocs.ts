import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpApiSwagger from "@effect/platform/HttpApiSwagger"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Context, Effect, Layer } from "effect"
import type * as http from "node:http"
import { GatewayApi } from "./Api.js"

/**
 * `/docs`: Swagger UI over the REST face's OpenAPI document, as an app of its own. Imported only
 * when `/docs` is first asked for (see HttpServer): the Swagger UI bundle is a 2 MB string in this
 * module's source, and Swagger's page with it inlined another, which an idle gateway should not
 * hold (it was most of the idle heap's large objects).
 */
export const makeSwaggerHandler: Effect.Effect<(req: http.IncomingMessage, res: http.ServerResponse) => void> = HttpApiBuilder
  .httpApp.pipe(
    Effect.provide(
      HttpApiSwagger.layer({ path: "/docs" }).pipe(
        Layer.provideMerge(HttpApiBuilder.Router.Live),
        Layer.provideMerge(HttpApiBuilder.Middleware.layer),
        // The page needs the API's definition only, not its handlers.
        Layer.provideMerge(Layer.succeed(HttpApi.Api, { api: GatewayApi as unknown as HttpApi.Api["Type"]["api"], context: Context.empty() }))
      )
    ),
    Effect.flatMap((app) => NodeHttpServer.makeHandler(app)),
    Effect.provide(NodeHttpServer.layerContext)
  )
