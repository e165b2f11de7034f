from pegpar.cli import main

main()
