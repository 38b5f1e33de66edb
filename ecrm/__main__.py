from ecrm.cli import app

app(prog_name="ecrm")
