// react-admin's json-server data provider (ra-data-json-server), as a
// react-admin app would call it, against the base URL given as argv[2]
// (`memdb serve db.json --compat 0.17`). Prints ONE JSON object holding every
// result; on any error prints a message to stderr and exits non-zero.
//
// No DOM shim is needed: ra-core's fetchUtils.fetchJson only uses fetch,
// Headers and FormData, which Node 18+ has as globals.
//
// Used by backend/tests/e2e/test_ra_data_json_server.py, which asserts the
// results against the db.json it writes.
import jsonServerProvider from 'ra-data-json-server';

const url = process.argv[2];
if (!url) {
    process.stderr.write('usage: node client.mjs BASE_URL\n');
    process.exit(2);
}

const provider = jsonServerProvider(url.replace(/\/+$/, ''));

const run = async () => {
    const results = {};
    // GET /posts?author=typicode&views_gte=10&_sort=views&_order=DESC&_start=0&_end=2
    results.getList = await provider.getList('posts', {
        pagination: { page: 1, perPage: 2 },
        sort: { field: 'views', order: 'DESC' },
        filter: { author: 'typicode', views_gte: 10 },
    });
    // GET /posts/3
    results.getOne = await provider.getOne('posts', { id: 3 });
    // GET /posts?id=1&id=3
    results.getMany = await provider.getMany('posts', { ids: [1, 3] });
    // GET /comments?postId=1&_sort=id&_order=DESC&_start=0&_end=2
    results.getManyReference = await provider.getManyReference('comments', {
        target: 'postId',
        id: 1,
        pagination: { page: 1, perPage: 2 },
        sort: { field: 'id', order: 'DESC' },
        filter: {},
    });
    // POST /posts
    results.create = await provider.create('posts', {
        data: { title: 'created by react-admin', author: 'ra', views: 0 },
    });
    // PUT /posts/3
    results.update = await provider.update('posts', {
        id: 3,
        data: { id: 3, title: 'hotel (edited)', author: 'trivago', views: 51 },
        previousData: results.getOne.data,
    });
    // DELETE /posts/5
    results.delete = await provider.delete('posts', {
        id: 5,
        previousData: { id: 5 },
    });
    return results;
};

try {
    const results = await run();
    process.stdout.write(JSON.stringify(results) + '\n');
} catch (error) {
    const status = error && error.status !== undefined ? ` (HTTP ${error.status})` : '';
    const body = error && error.body !== undefined ? ` body=${JSON.stringify(error.body)}` : '';
    process.stderr.write(
        `ra-data-json-server client failed${status}: ${error && error.message}${body}\n` +
            `${(error && error.stack) || ''}\n`,
    );
    process.exitCode = 1;
}
