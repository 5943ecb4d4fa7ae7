// A webhook receiver in a process of its own: answers 204, and measures the time from a row's
// commit (the `t0` column the benchmark writes) to the call's arrival.
import { createServer } from 'node:http';

let count = 0;
let latencies: number[] = [];

const server = createServer((request, response) => {
  if (request.method === 'GET') {
    response.end(JSON.stringify({ count, latencies: request.url === '/stats?latencies=1' ? latencies : undefined }));
    return;
  }
  if (request.url === '/reset') {
    count = 0;
    latencies = [];
    response.end();
    return;
  }
  const chunks: Buffer[] = [];
  request.on('data', (chunk: Buffer) => chunks.push(chunk));
  request.on('end', () => {
    count++;
    const t0 = (JSON.parse(Buffer.concat(chunks).toString()) as { data?: { t0?: string }[] }).data?.[0]?.t0;
    if (t0) latencies.push(Date.now() - Number(t0));
    response.writeHead(204).end();
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as { port: number };
  process.stdout.write(`listening on http://127.0.0.1:${port}\n`);
});
