import { Effect, Layer } from "effect"
import { GatewayConfig, type GatewayConfigShape } from "../config/GatewayConfig.js"
import { GatewayLive } from "../gateway/Gateway.js"
import { ListeningAddress } from "../http/HttpServer.js"
import { type LogFormat, loggerLayer } from "../observability/logging.js"
import { RequestLog } from "../observability/RequestLog.js"
import { writeFileAtomicSync } from "../registry/atomicWrite.js"
import { READY_FILE_ENV } from "./background.js"
import { CommandFailed } from "./CommandFailed.js"
import { holdRegistryFile } from "./registryLock.js"

/**
 * For `start --background`: once the gateway serves (port bound, first health check done), its
 * URL goes to the file the parent named in MCP_GATEWAY_READY_FILE, whatever the log level.
 */
const announceReady = Layer.effectDiscard(
  Effect.flatMap(ListeningAddress, (address) =>
    Effect.sync(() => {
      const file = process.env[READY_FILE_ENV]
      if (file !== undefined && file !== "") writeFileAtomicSync(file, address.url)
    }))
)

/**
 * Builds the gateway from a loaded config and runs it until SIGINT/SIGTERM. Its own module, loaded
 * by `start` alone: the gateway's code (HTTP server, transports, OpenTelemetry) takes longer to
 * load than the rest of the CLI, and `status` or `version` need none of it.
 */
export const launchGateway = (config: GatewayConfigShape, logFormat: LogFormat) => {
  const logger = loggerLayer(config.gateway.logLevel, logFormat)
  const requestLog = RequestLog.forLogger(config.gateway.logLevel, logFormat)
  const launch = Layer.launch(
    announceReady.pipe(Layer.provideMerge(GatewayLive), Layer.provide(GatewayConfig.layer(config)), Layer.provide(requestLog))
  )
  const registryFile = config.gateway.registryFile
  return (registryFile === undefined ? launch : Effect.scoped(Effect.zipRight(holdRegistryFile(registryFile), launch))).pipe(
    Effect.catchTags({
      PluginError: (e) => new CommandFailed({ message: e.message, exitCode: 2 }),
      RegistryStorageError: (e) => new CommandFailed({ message: e.message, exitCode: 2 }),
      ListenError: (e) => new CommandFailed({ message: e.message, exitCode: 1 })
    }),
    Effect.provide(logger)
  )
}
