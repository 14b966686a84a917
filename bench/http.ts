/**
 * The load generator's HTTP client: node:http with keep-alive sockets, much cheaper per
 * request than fetch, so the generator takes less of the CPU it shares with the systems.
 */
import { Agent, request, type IncomingHttpHeaders } from 'node:http';

export interface HttpAnswer {
  status: number;
  body: string;
  headers: IncomingHttpHeaders;
}

export class HttpClient {
  private readonly agent: Agent;
  private readonly host: string;
  private readonly port: number;

  /** `headers` go with every request (an Authorization header, say). */
  constructor(
    baseUrl: string,
    maxSockets = 256,
    private readonly headers: Record<string, string> = {},
  ) {
    const u = new URL(baseUrl);
    this.host = u.hostname;
    this.port = Number(u.port || 80);
    // Idle sockets are dropped after 4 s, before a Node server's 5 s keep-alive timeout closes them.
    this.agent = new Agent({ keepAlive: true, maxSockets, timeout: 4000 });
  }

  private closed = false;

  send(method: 'GET' | 'POST', path: string, body?: string, timeoutMs = 120_000): Promise<HttpAnswer> {
    if (this.closed) return Promise.reject(new Error('the HTTP client is closed'));
    // A kept-alive socket the server closed just as it was reused fails with ECONNRESET before
    // the request was read: sent again once on a fresh socket (the pattern of Node's http docs).
    return this.attempt(method, path, body, timeoutMs).catch((err: unknown) => {
      if ((err as { retryable?: boolean }).retryable && !this.closed) return this.attempt(method, path, body, timeoutMs);
      throw err;
    });
  }

  private attempt(method: 'GET' | 'POST', path: string, body: string | undefined, timeoutMs: number): Promise<HttpAnswer> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string | number> = { ...this.headers };
      if (body !== undefined) {
        headers['content-type'] = 'application/json';
        headers['content-length'] = Buffer.byteLength(body);
      }
      const req = request({ host: this.host, port: this.port, method, path, headers, agent: this.agent }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text, headers: res.headers }));
        res.on('error', reject);
      });
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${path}: no answer within ${timeoutMs} ms`)));
      req.on('error', (err: NodeJS.ErrnoException) => {
        reject(req.reusedSocket && err.code === 'ECONNRESET' ? Object.assign(err, { retryable: true }) : err);
      });
      req.end(body);
    });
  }

  async getJson<T>(path: string): Promise<{ status: number; json: T | undefined }> {
    const a = await this.send('GET', path);
    let json: T | undefined;
    try {
      json = JSON.parse(a.body) as T;
    } catch {
      json = undefined;
    }
    return { status: a.status, json };
  }

  /** Ends the sockets; later requests fail at once (an interrupted run stops sending). */
  close(): void {
    this.closed = true;
    this.agent.destroy();
  }
}
