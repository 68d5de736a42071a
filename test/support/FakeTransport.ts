import { TransportError } from "../../src/transport/TransportError.js"
import { type FakeBehaviour, makeTransportFake } from "../../src/transport/TransportFake.js"

/** The fake Transport the product ships (src/transport/TransportFake.ts), under the name the tests know it by. */
export const makeFakeTransport = makeTransportFake
export type Behaviour = FakeBehaviour

export const refused = (instanceId: string) =>
  new TransportError({ instanceId, reason: "refused", message: "ECONNREFUSED", reachedBackend: false })

export const broken = (instanceId: string) =>
  new TransportError({ instanceId, reason: "reset", message: "process exited (code 1)", reachedBackend: true })

/** The backend refused the message as malformed (HTTP 400): the client's fault. */
export const rejected = (instanceId: string) =>
  new TransportError({ instanceId, reason: "rejected", message: "HTTP 400: bad request", reachedBackend: true })
