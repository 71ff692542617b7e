from collab_ls.cli import main

main()
