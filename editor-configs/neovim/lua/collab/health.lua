-- :checkhealth collab (and :CollabHealth): is collab-ls installed, which
-- version, and how is the session doing (collab.status).
local M = {}

local MIN_NVIM = { 0, 11, 0 }

local function redact(url)
  return (url:gsub('([?&]secret=)[^&]*', '%1…'))
end

local function check_neovim()
  local v = vim.version()
  local have = ('%d.%d.%d'):format(v.major, v.minor, v.patch)
  if vim.version.lt(v, MIN_NVIM) then
    vim.health.error(('Neovim %s: collab.nvim needs 0.11 or newer'):format(have))
  else
    vim.health.ok(('Neovim %s'):format(have))
  end
end

--- The collab-ls binary from `setup{ cmd = ... }`, found and asked its version.
local function check_binary(collab)
  local cmd = collab.config.cmd or { 'collab-ls' }
  local exe = cmd[1]
  local path = exe and vim.fn.exepath(exe) or ''
  if path == '' then
    vim.health.error(('%s not found (setup{ cmd = %s })'):format(tostring(exe), vim.inspect(cmd)), {
      'install it: pip install collab-ls (or pip install -e . in the repository)',
      'or give its full path: require("collab").setup({ cmd = { "/path/to/collab-ls" } })',
    })
    return
  end
  local ok, res = pcall(function()
    return vim.system({ path, '--version' }, { text = true }):wait(10000)
  end)
  if not ok or not res or res.code ~= 0 then
    vim.health.error(('%s does not run: %s'):format(path, ok and res and (res.stderr or '') or tostring(res)), {
      'run it by hand: ' .. path .. ' --version',
      'collab-ls doctor checks the installation in plain words',
    })
    return
  end
  local version = vim.trim(res.stdout ~= '' and res.stdout or (res.stderr or ''))
  vim.health.ok(('%s: %s'):format(path, version))
end

--- The session, from the running client and `collab.status`.
local function check_session(collab)
  local client = collab.client()
  if not client then
    vim.health.info('no session: :CollabShare to host, :CollabJoin {url} to join')
    return
  end
  if not client.initialized then
    vim.health.warn('collab-ls is starting (not initialized yet)')
    return
  end
  local status, err = collab.status(3000)
  if not status then
    vim.health.error('collab.status failed: ' .. tostring(err), {
      'look at collab-ls\'s log (--log-file, or :LspLog)',
    })
    return
  end
  local role = status.role or '?'
  local url = type(status.url) == 'string' and redact(status.url) or 'no URL yet'
  if status.connected then
    vim.health.ok(('%s, connected to %s'):format(role, url))
  else
    vim.health.warn(('%s, not connected to the relay (%s)'):format(role, url), {
      'collab-ls reconnects by itself; collab-ls doctor URL checks the relay',
    })
  end
  local docs = status.documents or {}
  if #docs == 0 then
    vim.health.info('no shared document open: open a file under ' .. (client.root_dir or 'the project root'))
  else
    vim.health.ok(('%d shared document(s): %s'):format(#docs, table.concat(docs, ', ')))
  end
  local peers = collab.peers and collab.peers() or {}
  vim.health.info(('%d peer(s) visible'):format(#peers))
end

function M.check()
  local collab = require('collab')
  vim.health.start('collab.nvim')
  check_neovim()
  vim.health.start('collab-ls')
  check_binary(collab)
  vim.health.start('session')
  check_session(collab)
end

return M
