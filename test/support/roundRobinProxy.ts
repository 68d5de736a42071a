import * as http from "node:http"

/**
 * An HTTP load balancer for the scale-out tests, as an operator would put in front of replicas:
 * each request goes to the next live target in turn (a target that refuses the connection is
 * skipped, as a balancer's health check would), the answer streamed back as it comes (SSE
 * included). Which target served each request is recorded.
 */
export const startRoundRobinProxy = async (targets: () => ReadonlyArray<string>) => {
  let next = 0
  const served: Array<string> = []
  const agent = new http.Agent({ keepAlive: true })
  const forward = (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer, tries: number) => {
    const list = targets()
    if (list.length === 0 || tries >= list.length) return void res.writeHead(502).end("no target")
    const target = new URL(list[next++ % list.length]!)
    const upstream = http.request({
      host: target.hostname,
      port: target.port,
      method: req.method,
      path: req.url,
      headers: { ...req.headers, host: target.host },
      agent
    }, (answer) => {
      served.push(target.origin)
      res.writeHead(answer.statusCode ?? 502, answer.headers)
      answer.pipe(res)
    })
    upstream.on("error", (e: NodeJS.ErrnoException) => {
      if (!res.headersSent && (e.code === "ECONNREFUSED" || e.code === "ECONNRESET")) return forward(req, res, body, tries + 1)
      res.destroy()
    })
    res.on("close", () => upstream.destroy())
    upstream.end(body)
  }
  const server = http.createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => forward(req, res, Buffer.concat(chunks), 0))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    served,
    close: () =>
      new Promise<void>((resolve) => {
        agent.destroy()
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
}
