import { Layer } from "effect"
import { GatewayConfig } from "../../src/config/GatewayConfig.js"
import { GatewayCore } from "../../src/gateway/Gateway.js"
import { Timer } from "../../src/clock/Timer.js"
import { makeFakeTransport } from "./FakeTransport.js"
import type { testConfig } from "./testConfig.js"

/**
 * The gateway's real services (Dispatcher, Registry, HealthChecker, sessions, ...) over a fake
 * Transport, with every deadline on the Clock of the test (the TestClock inside `it.effect`/`it.scoped`).
 */
export const testGateway = (config: ReturnType<typeof testConfig>) => {
  const fake = makeFakeTransport()
  const layer = GatewayCore.pipe(
    Layer.provide(fake.layer),
    Layer.provide(Timer.layerTest),
    Layer.provide(GatewayConfig.layer(config))
  )
  return { fake, layer }
}
