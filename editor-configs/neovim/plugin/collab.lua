-- collab.nvim commands; the module loads on first use. See lua/collab/init.lua.
if vim.g.loaded_collab then
  return
end
vim.g.loaded_collab = true

local command = vim.api.nvim_create_user_command
command('CollabHealth', function() vim.cmd('checkhealth collab') end, { nargs = 0, desc = 'collab-ls: :checkhealth collab (collab-ls on PATH, version, session)' })

command('CollabShare', function(o)
  require('collab').share(o.args)
end, { nargs = '?', desc = 'collab-ls: share this project (optional relay URL)' })

command('CollabJoin', function(o)
  if #o.fargs > 2 then
    vim.notify('collab: :CollabJoin {url} [dir]: one directory at most (escape spaces with \\)', vim.log.levels.ERROR)
    return
  end
  require('collab').join(o.fargs[1], o.fargs[2])
end, { nargs = '+', complete = 'dir', desc = 'collab-ls: join a shared session by URL [into a folder, with no checkout]' })

command('CollabStatus', function()
  require('collab').show_status()
end, { nargs = 0, desc = 'collab-ls: show the session status' })

command('CollabStop', function()
  require('collab').stop()
end, { nargs = 0, desc = 'collab-ls: stop collab-ls' })

command('CollabPeers', function()
  require('collab').show_peers()
end, { nargs = 0, desc = 'collab-ls: who is in the session' })

command('CollabFollow', function(o)
  require('collab').follow(o.args)
end, { nargs = 1, desc = 'collab-ls: follow a peer (by name)' })

command('CollabUnfollow', function()
  require('collab').unfollow()
end, { nargs = 0, desc = 'collab-ls: stop following' })

command('CollabChat', function(o)
  require('collab').chat(o.args)
end, { nargs = '?', desc = 'collab-ls: send a chat message (none: show the chat)' })
