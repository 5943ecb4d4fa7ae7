import { createHash } from 'node:crypto';
import type { GraphiQLOptions } from 'graphql-yoga';

/** Where the GraphiQL page's script, styles, editor workers and icon are served: this server, not a CDN. */
export const GRAPHIQL_ASSETS_PATH = '/graphiql';

/**
 * The page allows only its own server's scripts (no inline script, no eval) and connections
 * (HTTP and WebSocket to this origin); React and the editor set inline styles.
 */
export const GRAPHIQL_CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "font-src 'self' data:",
  "worker-src 'self' blob:",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'none'",
].join('; ');

/**
 * Runs before GraphiQL's bundle: points the editor at its workers, and once the page is read
 * starts GraphiQL with the options the page carries. Browsers cannot set headers on a
 * WebSocket, and GraphiQL sends its Headers pane only with HTTP requests, so its WebSocket
 * client gets the Headers pane (as GraphiQL stores it) as `connectionParams`, read each time it
 * connects: the token a user pastes there authenticates subscriptions too.
 */
const START_SCRIPT = `(function () {
  var config = JSON.parse(document.getElementById('graphiql-config').textContent);
  var workers = {};
  var workersLoaded = Promise.all(
    Object.keys(config.workers).map(function (label) {
      return fetch(config.workers[label])
        .then(function (response) { return response.blob(); })
        .then(function (script) { workers[label] = URL.createObjectURL(new Blob([script], { type: 'text/javascript' })); });
    }),
  );
  self.MonacoEnvironment = {
    globalAPI: false,
    getWorkerUrl: function (moduleId, label) {
      return workers[label];
    },
  };
  function storedHeaders() {
    try {
      var text = localStorage.getItem('graphiql:headers');
      if (!text) {
        var state = JSON.parse(localStorage.getItem('graphiql:tabState') || 'null');
        var tab = state && state.tabs && state.tabs[state.activeTabIndex];
        text = tab && tab.headers;
      }
      var headers = JSON.parse(text || '{}');
      return headers && typeof headers === 'object' ? headers : {};
    } catch (error) {
      return {};
    }
  }
  var pageRead = new Promise(function (resolve) { document.addEventListener('DOMContentLoaded', resolve); });
  Promise.all([pageRead, workersLoaded.catch(function () {})]).then(function () {
    var options = Object.assign({}, config.options, { connectionParams: storedHeaders });
    YogaGraphiQL.renderYogaGraphiQL(document.getElementById('root'), options);
  });
})();
`;

interface Asset {
  body: string | Buffer;
  contentType: string;
}

interface GraphiQLAssets {
  /** By file name (which carries a hash of the content, so browsers may keep it for good). */
  files: Map<string, Asset>;
  /** The path each asset is served at, by role. */
  paths: Record<'start' | 'script' | 'styles' | 'icon' | 'editorWorker' | 'jsonWorker' | 'graphqlWorker', string>;
}

let loading: Promise<GraphiQLAssets> | undefined;

/**
 * GraphiQL's files, from the @graphql-yoga/render-graphiql package (the same build yoga
 * otherwise loads from unpkg.com), read on first use: about 9 MB that only a process serving
 * the page holds.
 */
export function graphiqlAssets(): Promise<GraphiQLAssets> {
  loading ??= import('@graphql-yoga/render-graphiql/graphiql').then((bundle) => {
    const files = new Map<string, Asset>();
    const serve = (name: string, extension: string, body: string | Buffer, contentType: string) => {
      const file = `${name}.${createHash('sha256').update(body).digest('hex').slice(0, 16)}.${extension}`;
      files.set(file, { body, contentType });
      return `${GRAPHIQL_ASSETS_PATH}/${file}`;
    };
    const javascript = 'text/javascript; charset=utf-8';
    const paths = {
      start: serve('start', 'js', START_SCRIPT, javascript),
      script: serve('graphiql', 'js', bundle.js, javascript),
      styles: serve('graphiql', 'css', bundle.css, 'text/css; charset=utf-8'),
      icon: serve('favicon', 'ico', Buffer.from(bundle.favicon.slice(bundle.favicon.indexOf(',') + 1), 'base64'), 'image/x-icon'),
      editorWorker: serve('editor.worker', 'js', bundle.editorWorkerService, javascript),
      jsonWorker: serve('json.worker', 'js', bundle.jsonWorker, javascript),
      graphqlWorker: serve('graphql.worker', 'js', bundle.graphqlWorker, javascript),
    };
    return { files, paths };
  });
  return loading;
}

const escapeHtml = (text: string) =>
  text.replace(/[&<>"']/g, (char) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[char]!);

/** yoga's GraphiQL (subscriptions over graphql-ws authenticated by the Headers pane), with every file from this server. */
export async function renderGatewayGraphiQL(options: GraphiQLOptions = {}): Promise<string> {
  const { paths } = await graphiqlAssets();
  const config = {
    options,
    workers: { editorWorkerService: paths.editorWorker, json: paths.jsonWorker, graphql: paths.graphqlWorker },
  };
  // In a <script> element only `<` can end it early: as \u003c it stays JSON.
  const configJson = JSON.stringify(config).replace(/</g, '\\u003c');
  return `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <title>${escapeHtml(options.title ?? 'GraphiQL')}</title>
    <link rel="icon" href="${paths.icon}" />
    <link rel="stylesheet" href="${paths.styles}" />
  </head>
  <body id="body" class="no-focus-outline">
    <noscript>You need to enable JavaScript to run GraphiQL.</noscript>
    <div id="root"></div>
    <script type="application/json" id="graphiql-config">${configJson}</script>
    <script src="${paths.start}"></script>
    <script src="${paths.script}"></script>
  </body>
</html>
`;
}
