from django.db import migrations, models


class Migration(migrations.Migration):
    """The polygons layout (LabelMe / COCO annotation files) joins the dataset layouts."""

    dependencies = [
        ('annotator', '0010_job_heartbeats'),
    ]

    operations = [
        migrations.AlterField(
            model_name='dataset',
            name='layout',
            field=models.CharField(choices=[('mvtec', 'MVTec AD'), ('btad', 'BTAD'), ('folder', 'Plain folder'), ('beside', 'Masks beside images'), ('manifest', 'Manifest (CSV / JSON lines)'), ('polygons', 'LabelMe / COCO annotations')], max_length=16),
        ),
    ]
