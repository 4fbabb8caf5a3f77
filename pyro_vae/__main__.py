from pyro_vae.cli import console_main

console_main()
