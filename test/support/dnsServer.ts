import * as dgram from "node:dgram"

/** What the test's name server answers, by name (lower case, no trailing dot). */
export type DnsRecords = Record<string, {
  readonly A?: ReadonlyArray<string>
  readonly AAAA?: ReadonlyArray<string>
  readonly SRV?: ReadonlyArray<{ readonly priority: number; readonly weight: number; readonly port: number; readonly target: string }>
}>

const TYPES = { A: 1, AAAA: 28, SRV: 33 } as const

const encodeName = (name: string) =>
  Buffer.concat([...name.split(".").filter((l) => l !== "").map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, "ascii")])), Buffer.from([0])])

const ipv6Bytes = (address: string): Buffer => {
  const [head, tail] = address.split("::") as [string, string | undefined]
  const left = head === "" ? [] : head.split(":")
  const right = tail === undefined || tail === "" ? [] : tail.split(":")
  const groups = [...left, ...Array(8 - left.length - right.length).fill("0"), ...right]
  const out = Buffer.alloc(16)
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2))
  return out
}

const rdataOf = (type: number, value: any): Buffer => {
  if (type === TYPES.A) return Buffer.from((value as string).split(".").map(Number))
  if (type === TYPES.AAAA) return ipv6Bytes(value as string)
  const header = Buffer.alloc(6)
  header.writeUInt16BE(value.priority, 0)
  header.writeUInt16BE(value.weight, 2)
  header.writeUInt16BE(value.port, 4)
  return Buffer.concat([header, encodeName(value.target)])
}

/**
 * A name server on 127.0.0.1 (UDP, a free port) answering A, AAAA and SRV questions from a
 * table the test can change while it runs: NXDOMAIN for names it does not have, an empty
 * answer for a type a name lacks. Just enough DNS for the discovery tests, over a real socket.
 */
export const startDnsServer = async (initial: DnsRecords) => {
  let records = initial
  let queries = 0
  let closed: Promise<void> | undefined
  const socket = dgram.createSocket("udp4")
  socket.on("message", (message, peer) => {
    queries++
    const id = message.readUInt16BE(0)
    let offset = 12
    const labels: Array<string> = []
    while (message[offset]! !== 0) {
      const length = message[offset]!
      labels.push(message.subarray(offset + 1, offset + 1 + length).toString("ascii"))
      offset += length + 1
    }
    const question = message.subarray(12, offset + 5)
    const type = message.readUInt16BE(offset + 1)
    const name = labels.join(".").toLowerCase()
    const entry = records[name]
    const key = (Object.keys(TYPES) as Array<keyof typeof TYPES>).find((k) => TYPES[k] === type)
    const values: ReadonlyArray<any> = entry === undefined || key === undefined ? [] : entry[key] ?? []
    const answers = values.map((value) => {
      const rdata = rdataOf(type, value)
      const fixed = Buffer.alloc(12)
      fixed.writeUInt16BE(0xc00c, 0) // a pointer to the question's name
      fixed.writeUInt16BE(type, 2)
      fixed.writeUInt16BE(1, 4) // IN
      fixed.writeUInt32BE(5, 6) // TTL
      fixed.writeUInt16BE(rdata.length, 10)
      return Buffer.concat([fixed, rdata])
    })
    const header = Buffer.alloc(12)
    header.writeUInt16BE(id, 0)
    header.writeUInt16BE(0x8180 | (entry === undefined ? 3 : 0), 2) // response, recursion available, NXDOMAIN or NOERROR
    header.writeUInt16BE(1, 4)
    header.writeUInt16BE(answers.length, 6)
    socket.send(Buffer.concat([header, question, ...answers]), peer.port, peer.address)
  })
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve))
  return {
    address: `127.0.0.1:${socket.address().port}`,
    set: (next: DnsRecords) => void (records = next),
    queries: () => queries,
    close: () => closed ??= new Promise<void>((resolve) => socket.close(() => resolve()))
  }
}
